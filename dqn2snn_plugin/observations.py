"""Raw observations as batch tensors: the checks every way into a network shares.

A leaf module (it imports no other step of the flow), so that loading, simulating and measuring can
all use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.errors import CalibrationError, ObservationError

PIXEL_SIDE = 32  # MinAtar's binary planes are 10x10; screens (Atari 84x84, Procgen 64x64) are far wider


def observation_batch(obs: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Raw observations (numpy or torch, one or a batch) as a batch tensor [B, *shape], dtype kept,
    except that bool planes (MinAtar's observations) become uint8 0/1, which every network reads.

    Bool is refused for screen frames (3-D observations at least `PIXEL_SIDE` wide and high, such as
    Atari's 84x84 stacks): those networks read raw pixels 0..255, and a bool frame was binarised by
    mistake.

    ObservationError for a wrong shape, an empty batch, NaN or infinite values, and image frames
    (3-D observations, raw pixels 0..255) with fractional values: those were divided by 255 already,
    while SB3's `/255` is folded into the network's first layer."""
    try:
        x = obs if isinstance(obs, torch.Tensor) else torch.as_tensor(np.asarray(obs))
    except (TypeError, ValueError, RuntimeError):
        raise ObservationError(f"observations must be a numeric array or tensor, got {type(obs).__name__}") from None
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        x = x.unsqueeze(0)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ObservationError(
            f"observations of shape {tuple(x.shape)} do not match this network's input: "
            f"expected [B, {', '.join(map(str, shape))}]"
        )
    if len(x) == 0:
        raise ObservationError(f"the observation batch is empty: pass at least one observation of shape {shape}")
    if x.is_floating_point():
        # one cheap pass on images (an agent's hot path): NaN, infinities and fractions all have a nonzero
        # fractional part (frac(inf) is NaN): in C where it can, else the sum of |frac| (0 only for whole pixels)
        if len(shape) == 3:
            suspect = fused_scan.fractional(x)
            suspect = bool(torch.frac(x).abs_().sum() != 0) if suspect is None else suspect
        else:
            suspect = not torch.isfinite(x).all()
        if suspect and not torch.isfinite(x).all():
            raise ObservationError("observations hold NaN or infinite values: pass the env's raw observations")
        if suspect:
            raise ObservationError(
                "image observations hold fractional values: pass raw pixels 0..255 (uint8), not frames divided "
                "by 255 (the DQN's /255 is already inside its first layer)"
            )
    elif x.is_complex() or (x.dtype == torch.bool and _is_screen(shape)):
        raise ObservationError(f"observations must be numbers (raw pixels 0..255 for screen frames), got dtype {x.dtype}")
    return x.to(torch.uint8) if x.dtype == torch.bool else x


def _is_screen(shape: tuple[int, ...]) -> bool:
    """Whether observations of this shape are screen frames (3-D, two sides of at least PIXEL_SIDE)."""
    return len(shape) == 3 and sorted(shape)[1] >= PIXEL_SIDE


def _as_batch(item: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """One observation or a batch of them as a batch tensor (an empty batch stays empty: the caller
    refuses an empty set as a whole); CalibrationError if the shape or the values are wrong."""
    if tuple(np.shape(item)) == (0, *shape):
        return torch.as_tensor(np.asarray(item))
    try:
        return observation_batch(item, shape)
    except ObservationError as exc:
        if tuple(np.shape(item))[-len(shape):] == shape:
            raise CalibrationError(f"calibration {exc}") from None
        raise CalibrationError(
            f"observations of shape {tuple(np.shape(item))} do not match the network's input: expected "
            f"{shape} or [B, {', '.join(map(str, shape))}]"
        ) from None


def as_observation_array(
    data: np.ndarray | torch.Tensor | Iterable[np.ndarray | torch.Tensor], observation_shape: tuple[int, ...]
) -> torch.Tensor:
    """Observations as one CPU batch tensor `[N, *observation_shape]` (dtype kept, e.g. uint8).

    `data` may be an array or tensor (one observation or a batch) or an iterable of such (e.g. a
    list of batches or a DataLoader of tensors). Raises CalibrationError for an empty set or a shape
    that does not match `observation_shape`.
    """
    shape = tuple(observation_shape)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        batches = [_as_batch(data, shape)]
    else:
        batches = [_as_batch(item, shape) for item in data]
    batch = torch.cat(batches).cpu() if batches else torch.empty((0, *shape))
    if len(batch) == 0:
        raise CalibrationError(f"the observation set is empty: expected at least one observation of shape {shape}")
    return batch
