"""The loaded DQN: a conversion-ready `nn.Sequential` plus what we know about where it came from.

`load_dqn(source)` (below) reads every kind of source users hold; the SB3-specific parsing lives in
`dqn2snn_plugin.adapters.sb3`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.adapters import hub, sb3
from dqn2snn_plugin.adapters.sb3_network import infer_observation_shape
from dqn2snn_plugin.errors import CheckpointError, UnsupportedLayerError
from dqn2snn_plugin.observations import observation_batch

CONVERTIBLE_LAYERS = (nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten)


@dataclass(frozen=True)
class DQNCheckpoint:
    """A DQN ready for conversion.

    `q_network` maps an observation batch in SB3's layout (`[B, 4, 84, 84]` for Atari, `[B, D]` for
    vectors; raw values as the env gives them, SB3's `/255` already folded into the first layer) to
    Q-values `[B, n_actions]`. It holds only Conv2d / Linear / ReLU / Flatten.
    """

    q_network: nn.Sequential
    n_actions: int
    observation_shape: tuple[int, ...]
    policy: str
    algorithm: str
    sb3_version: str | None
    env_id: str | None
    source: str

    def prepare(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Turn raw observations (numpy or torch, uint8 or float, one or a batch) into a float batch
        on the network's device, in its floating dtype (float32 unless the network was made double)."""
        parameter = next(self.q_network.parameters())
        return observation_batch(obs, self.observation_shape).to(device=parameter.device, dtype=parameter.dtype)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Q-values `[B, n_actions]` of the (non-spiking) DQN."""
        return self.q_network(self.prepare(obs))

    def act(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Greedy actions `[B]`; ties go to the lowest action index (torch.argmax), as everywhere here."""
        return self.q_values(obs).argmax(dim=1)


def load_dqn(
    source: str | Path | Any,
    *,
    env_id: str | None = None,
    device: str | torch.device = "cpu",
    n_quantiles: int | None = None,
) -> DQNCheckpoint:
    """Load a DQN from any source users hold, without running code stored in it.

    `source` is an SB3 / sb3-contrib `.zip` (DQN or QR-DQN, SB3 1.x or 2.x), a `.pt`/`.pth` state
    dict of an SB3 `QNetwork`, a hub id `hf://<org>/<repo>` (RL-Zoo naming), or an in-memory SB3
    `DQN` / `QRDQN` model or policy. `env_id` overrides the env id read from the file name.
    `n_quantiles` is for a QR-DQN `.pt` of an environment that cannot be made here (otherwise its
    quantile count follows from the environment's action count; see `sb3.read_state_dict`).
    The returned network is float32, in eval mode, on `device`.
    """
    parts = _read(source, env_id, n_quantiles)
    shape = parts.observation_shape or infer_observation_shape(parts.q_network, parts.source)
    n_actions = _validate(parts.q_network, shape, parts.n_actions, parts.source)
    return DQNCheckpoint(
        q_network=parts.q_network.to(device=device, dtype=torch.float32).eval(),
        n_actions=n_actions,
        observation_shape=shape,
        policy=parts.policy or "MlpPolicy",
        algorithm=parts.algorithm,
        sb3_version=parts.sb3_version,
        env_id=env_id or parts.env_id,
        source=parts.source,
    )


def describe(checkpoint: DQNCheckpoint) -> str:
    """A readable multi-line summary: provenance, input/output, one line per layer with its shapes."""
    lines = [
        f"source:        {checkpoint.source}",
        f"algorithm:     {checkpoint.algorithm}",
        f"policy:        {checkpoint.policy}",
        f"SB3 version:   {checkpoint.sb3_version or 'not recorded'}",
    ]
    lines.append(f"env id:        {checkpoint.env_id or 'could not tell from the file name (pass --env-id)'}")
    lines += [
        f"observation:   {_dims(checkpoint.observation_shape)}",
        f"actions:       {checkpoint.n_actions}",
        "layers:",
    ]
    x = torch.zeros(1, *checkpoint.observation_shape, device=next(checkpoint.q_network.parameters()).device)
    with torch.no_grad():
        for index, layer in enumerate(checkpoint.q_network):
            y = layer(x)
            params = sum(p.numel() for p in layer.parameters())
            is_conv = isinstance(layer, nn.Conv2d)
            detail = f"  kernel {layer.kernel_size[0]}, stride {layer.stride[0]}" if is_conv else ""
            count = f"  {params:,} params" if params else ""
            shapes = f"{_dims(x.shape[1:]):>10} -> {_dims(y.shape[1:]):<10}"
            lines.append(f"  {index:>2}  {type(layer).__name__:<8}{shapes}{detail}{count}".rstrip())
            x = y
    total = sum(p.numel() for p in checkpoint.q_network.parameters())
    lines.append(f"parameters:    {total:,}")
    return "\n".join(lines)


def _read(source: str | Path | Any, env_id: str | None, n_quantiles: int | None) -> sb3.SB3Parts:
    """Dispatch on the kind of source: hub id, zip, tensor file, or an in-memory SB3 object."""
    if isinstance(source, str) and source.startswith(hub.PREFIX):
        return dataclasses.replace(sb3.read_zip(hub.download(source)), source=source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"{source}: neither an existing file nor a hub id (hf://<org>/<repo>)")
        if path.suffix in (".pt", ".pth"):
            return sb3.read_state_dict(path, env_id=env_id, n_quantiles=n_quantiles)
        return sb3.read_zip(path)
    return sb3.read_model(source)


def _validate(net: nn.Sequential, shape: tuple[int, ...], n_actions: int | None, source: str) -> int:
    """Check that `net` holds only convertible layers and maps `[1, *shape]` to `[1, n_actions]`; return n_actions."""
    for index, layer in enumerate(net):
        if not isinstance(layer, CONVERTIBLE_LAYERS):
            raise UnsupportedLayerError(
                f"{source}: layer {index} is a {type(layer).__name__}, which cannot be converted"
            )
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, *shape))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{source}: the layer shapes do not match each other or the observation shape {shape}: {exc}"
        ) from None
    if n_actions is not None and out.shape[1] != n_actions:
        raise CheckpointError(
            f"{source}: the network has {out.shape[1]} outputs but the action space has {n_actions} actions"
        )
    return int(out.shape[1])


def _dims(shape: tuple[int, ...] | torch.Size) -> str:
    return "x".join(str(int(d)) for d in shape)
