"""Bounded, code-free reads of untrusted checkpoint files (zip entries and tensor files).

Checkpoints come from the hub and from strangers. A 4 MB SB3 zip whose `policy.pth` inflates to 4 GiB
once took 8.9 GB of memory and 50 s before it was refused; here every archive entry's declared size is
checked BEFORE it is read. A header that understates cannot get past it: zipfile's streamed read stops
at the declared size, and the entry then fails its CRC check (BadZipFile, reported by the caller).
PyTorch's own tensor files are zip archives too: their declared sizes are checked before `torch.load`,
which is always called with `weights_only=True`, so no code stored in a file ever runs.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from dqn2snn_plugin.errors import CheckpointError

MiB = 1 << 20
# A Nature-CNN DQN's weights are 6.5 MiB; 512 MiB leaves room for any DQN and refuses inflation bombs.
TENSOR_LIMIT = 512 * MiB
# SB3's `data` JSON and version file are a few KiB (numpy abbreviates the observation bounds).
TEXT_LIMIT = 16 * MiB


def read_entry(archive: zipfile.ZipFile, name: str, where: str, limit: int = TEXT_LIMIT) -> bytes:
    """The bytes of one archive entry, refused (CheckpointError) before any is read if it declares more
    than `limit`; zipfile then inflates no more than the declared size."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise CheckpointError(f"{where}: its entry {name} declares {_size(info.file_size)}, over the "
                              f"{_size(limit)} limit for a checkpoint entry (a zip bomb or not a DQN)")
    with archive.open(info) as entry:
        return entry.read()


def load_weights_only(file: bytes | Path, where: str) -> Any:
    """`torch.load(weights_only=True)` after bounding what it would inflate; a failure as CheckpointError in
    plain words (never torch's advice to load with weights_only=False, which would run code stored in the file)."""
    size = len(file) if isinstance(file, bytes) else Path(file).stat().st_size
    if size == 0:
        raise CheckpointError(f"{where}: the file is empty")
    if size > TENSOR_LIMIT:
        raise CheckpointError(f"{where}: the file is {_size(size)}, over the {_size(TENSOR_LIMIT)} limit for DQN weights")
    _check_inflated_size(io.BytesIO(file) if isinstance(file, bytes) else Path(file), where)
    try:
        return torch.load(io.BytesIO(file) if isinstance(file, bytes) else file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "it is not a PyTorch tensor file, or it holds Python objects besides tensors (those are never loaded)"
    except Exception:  # noqa: BLE001  torch raises many unrelated types for a damaged file
        reason = "it is damaged, cut short, or not a PyTorch file"
    raise CheckpointError(f"{where}: cannot be read as tensors: {reason}")


def _check_inflated_size(file: io.BytesIO | Path, where: str) -> None:
    """Refuse a tensor file in PyTorch's zip format whose entries declare more than TENSOR_LIMIT in all."""
    if not zipfile.is_zipfile(file):
        return  # the legacy format is stored uncompressed: its size on disk is what it holds
    try:
        with zipfile.ZipFile(file) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # torch.load reports the damage
    if total > TENSOR_LIMIT:
        raise CheckpointError(f"{where}: its tensors declare {_size(total)} when unpacked, over the "
                              f"{_size(TENSOR_LIMIT)} limit for DQN weights (a zip bomb or not a DQN)")


def _size(n: int) -> str:
    return f"{n / MiB:,.1f} MiB"
