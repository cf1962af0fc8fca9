"""Untrusted archives are bounded before they are read: a zip bomb is refused in one line, fast, without
inflating it (issue 24: a 4 MB zip whose policy.pth inflates to 4 GiB once took 8.9 GB and 50 s)."""

from __future__ import annotations

import io
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from stable_baselines3 import DQN

from dqn2snn_plugin import load_dqn
from dqn2snn_plugin.adapters import archive
from dqn2snn_plugin.errors import CheckpointError


def _declare_size(data: bytes, name: str, size: int) -> bytes:
    """The zip `data` with entry `name`'s uncompressed size rewritten to `size` in both of its headers
    (the local header and the central directory), leaving its content as it was: a lying header."""
    buffer = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    struct.pack_into("<I", buffer, info.header_offset + 22, size)
    position = buffer.find(b"PK\x01\x02")
    while position >= 0:
        length = struct.unpack_from("<H", buffer, position + 28)[0]
        if buffer[position + 46:position + 46 + length] == name.encode():
            struct.pack_into("<I", buffer, position + 24, size)
        position = buffer.find(b"PK\x01\x02", position + 4)
    return bytes(buffer)


@pytest.fixture
def sb3_zip(save_sb3) -> Path:
    return save_sb3(DQN, "dqn-CartPole-v1", buffer_size=1, policy_kwargs={"net_arch": [16]})[1]


def test_an_entry_declaring_more_than_the_limit_is_refused_before_it_is_read(sb3_zip, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_declare_size(sb3_zip.read_bytes(), "policy.pth", archive.TENSOR_LIMIT + 1))
    opened, real_open = [], zipfile.ZipFile.open

    def watched_open(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", watched_open)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"^.*bomb\.zip: its entry policy\.pth declares 512\.0 MiB, over the "
                                              r"512\.0 MiB limit for a checkpoint entry \(a zip bomb or not a DQN\)$"):
        load_dqn(bomb)
    assert time.perf_counter() - start < 1.0 and "policy.pth" not in opened


def test_a_header_that_understates_is_refused_and_one_that_overstates_is_never_read(sb3_zip, tmp_path, monkeypatch):
    """Understated: zipfile's read stops at the declared size and the CRC fails. Stated: over the limit
    (lowered here to 64 KiB), refused from the header alone."""
    monkeypatch.setattr(archive, "TEXT_LIMIT", 64 * 1024)
    with zipfile.ZipFile(sb3_zip) as old, zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            new.writestr(name, old.read(name) if name != "data" else b" " * (1 << 20))
    lying = tmp_path / "lying.zip"
    lying.write_bytes(_declare_size((tmp_path / "big.zip").read_bytes(), "data", 1000))
    with pytest.raises(CheckpointError, match=r"lying\.zip: not a readable zip file"):
        load_dqn(lying)  # zipfile stops at the declared 1000 bytes; their CRC fails
    with zipfile.ZipFile(tmp_path / "big.zip") as big, pytest.raises(
            CheckpointError, match=r"its entry data declares 1\.0 MiB, over the 0\.1 MiB limit"):
        archive.read_entry(big, "data", "big.zip", archive.TEXT_LIMIT)


def test_a_tensor_file_whose_entries_declare_too_much_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    torch.save({"0.weight": torch.zeros(4, 4)}, buffer)
    data = buffer.getvalue()
    largest = max(zipfile.ZipFile(io.BytesIO(data)).infolist(), key=lambda info: info.file_size).filename
    path = tmp_path / "bomb.pt"
    path.write_bytes(_declare_size(data, largest, archive.TENSOR_LIMIT + 1))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    with pytest.raises(CheckpointError, match=r"bomb\.pt: its tensors declare 512\.0 MiB when unpacked, over the "
                                              r"512\.0 MiB limit"):
        load_dqn(path)
