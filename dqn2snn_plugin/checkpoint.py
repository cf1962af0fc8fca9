"""The loaded DQN: a conversion-ready `nn.Sequential` plus what we know about where it came from.

`load_dqn(source)` (below) reads every kind of source users hold: SB3 files and objects
(`adapters.sb3`), CleanRL files and the common public layouts (`adapters.cleanrl`, `adapters.layouts`),
any feed-forward ReLU `nn.Module` (`adapters.torch_graph`), and a file's weights in the user's own
architecture (`network=`). Where the source does not record how raw observations are scaled, the scale
used is stated in `DQNCheckpoint.input_scaling`, never silently assumed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.adapters import cleanrl, hub, layouts, sb3, torch_graph
from dqn2snn_plugin.adapters.archive import TENSOR_LIMIT, read_entry
from dqn2snn_plugin.adapters.layer_folds import scale_
from dqn2snn_plugin.adapters.sb3_network import infer_observation_shape
from dqn2snn_plugin.errors import CheckpointError, ConfigError, UnsupportedLayerError
from dqn2snn_plugin.io.checks import check_device, check_parameters, check_shapes
from dqn2snn_plugin.observations import observation_batch

CONVERTIBLE_LAYERS = (nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten)


@dataclass(frozen=True)
class DQNCheckpoint:
    """A DQN ready for conversion.

    `q_network` maps an observation batch in SB3's layout (`[B, 4, 84, 84]` for Atari, `[B, D]` for
    vectors; raw values as the env gives them, SB3's `/255` already folded into the first layer) to
    Q-values `[B, n_actions]`. It holds only Conv2d / Linear / ReLU / Flatten. `input_scaling` says
    how raw observations are scaled inside the first layer and whether the source recorded it or it
    was assumed; `assumptions` lists anything else inferred rather than read (both printed by `describe`).
    """

    q_network: nn.Sequential
    n_actions: int
    observation_shape: tuple[int, ...]
    policy: str
    algorithm: str
    sb3_version: str | None
    env_id: str | None
    source: str
    input_scaling: str = "not recorded"
    assumptions: tuple[str, ...] = ()

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
    network: nn.Module | None = None,
    input_scale: float | None = None,
    env_id: str | None = None,
    observation_shape: tuple[int, ...] | None = None,
    device: str | torch.device = "cpu",
    n_quantiles: int | None = None,
) -> DQNCheckpoint:
    """Load a DQN from any source users hold, without running code stored in it.

    `source` is an SB3 / sb3-contrib `.zip` (DQN or QR-DQN, SB3 1.x or 2.x); a state dict file (`.pt`,
    `.pth`, CleanRL's `.cleanrl_model`) in SB3's `QNetwork` layout, CleanRL's, or another common public
    layout the shapes decide (see `adapters.layouts`); a hub id `hf://<org>/<repo>` (RL-Zoo or CleanRL
    naming); an in-memory SB3 `DQN` / `QRDQN` model or policy; or any feed-forward ReLU `nn.Module`
    (traced with torch.fx: BatchNorm, AvgPool2d, dueling heads and a `/255` in its forward are folded).
    `network=` loads a file's weights (read with `weights_only=True`) into that module first.
    `input_scale` is the factor raw observations were multiplied by in training (e.g. 1/255) where
    the source records none; one contradicting a recorded scale is a ConfigError. `env_id` overrides
    the env id read from the file name; `observation_shape` (without the batch) the inferred input
    shape of a module. `n_quantiles` is for a QR-DQN `.pt` of an environment that cannot be made here
    (otherwise its quantile count follows from the environment's action count; see `sb3.read_state_dict`).
    The returned network is float32, in eval mode, on `device`.
    """
    if input_scale is not None and not (math.isfinite(input_scale) and input_scale > 0):
        raise ConfigError(f"input_scale must be a positive finite number, got {input_scale}")
    device = check_device(device)
    parts = _read(source, network, env_id, observation_shape, n_quantiles)
    q_network, scaling = _apply_input_scale(parts, input_scale)
    shape = parts.observation_shape or infer_observation_shape(q_network, parts.source)
    n_actions = _validate(q_network, shape, parts.n_actions, parts.source)
    q_network = q_network.to(device=device, dtype=torch.float32).eval()
    check_parameters(q_network, parts.source, CheckpointError)  # NaN, or beyond float32's range
    return DQNCheckpoint(
        q_network=q_network,
        n_actions=n_actions,
        observation_shape=shape,
        policy=parts.policy or "MlpPolicy",
        algorithm=parts.algorithm,
        sb3_version=parts.sb3_version,
        env_id=env_id or parts.env_id,
        source=parts.source,
        input_scaling=scaling,
        assumptions=parts.assumptions,
    )


def parse_input_scale(text: str) -> float:
    """An input scale as users write it (`"1/255"`, `"0.5"`, `"1"`) as a float; ConfigError if it is not
    a positive number (for the command line's `--input-scale`)."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"input scale {text!r} is not a number or a fraction such as 1/255") from None
    if value <= 0:
        raise ConfigError(f"input scale {text!r} must be positive (raw observations are multiplied by it)")
    return float(value)


def describe(checkpoint: DQNCheckpoint) -> str:
    """A readable multi-line summary: provenance, input/output, one line per layer with its shapes."""
    lines = [
        f"source:        {checkpoint.source}",
        f"algorithm:     {checkpoint.algorithm}",
        f"policy:        {checkpoint.policy}",
        f"SB3 version:   {checkpoint.sb3_version or 'not recorded'}",
        f"input scaling: {checkpoint.input_scaling}",
        *(f"assumed:       {note}" for note in checkpoint.assumptions),
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


def _read(source: str | Path | Any, network: nn.Module | None, env_id: str | None,
          shape: tuple[int, ...] | None, n_quantiles: int | None) -> sb3.SB3Parts:
    """Dispatch on the kind of source: hub id, file (SB3 zip, or tensors), in-memory SB3 object or module."""
    if isinstance(source, str) and source.startswith(hub.PREFIX):
        parts = _read_file(hub.download(source), network, env_id, shape, n_quantiles)
        hub_env = hub.env_id_of(source)
        return dataclasses.replace(parts, source=source,
                                   env_id=parts.env_id or (sb3.registered_env_id(hub_env) if hub_env else None))
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise CheckpointError(f"{source}: neither an existing file nor a hub id (hf://<org>/<repo>)")
        return _read_file(Path(source), network, env_id, shape, n_quantiles)
    if network is not None:
        raise ConfigError("network= names the architecture for a file's weights; the source is already a module")
    if _is_sb3(source):
        return sb3.read_model(source)
    if isinstance(source, nn.Module):
        return _traced(source, f"<in-memory {type(source).__name__}>", shape, env_id=None)
    raise CheckpointError(f"<in-memory {type(source).__name__}>: not an SB3 DQN/QR-DQN model or policy, nor an nn.Module")


def _read_file(path: Path, network: nn.Module | None, env_id: str | None, shape: tuple[int, ...] | None,
               n_quantiles: int | None) -> sb3.SB3Parts:
    """An SB3 zip (by its `policy.pth`, or a `.zip` name), else a tensor file in a known layout."""
    where, stem = str(path), path.name.rsplit(".", 1)[0]
    is_sb3_zip = path.suffix == ".zip" or (zipfile.is_zipfile(path) and "policy.pth" in zipfile.ZipFile(path).namelist())
    if network is None and is_sb3_zip:
        return sb3.read_zip(path)
    if is_sb3_zip:
        with zipfile.ZipFile(path) as archive:
            state = sb3.load_state_dict(read_entry(archive, "policy.pth", where, TENSOR_LIMIT), where)
    else:
        state = sb3.load_state_dict(path, where)
    named_env = sb3.registered_env_id(stem.removesuffix(".qnet"))
    if network is not None:
        return _traced(_with_weights(network, state, where), where, shape, env_id=named_env)
    layout = layouts.match_layout(state, (*layouts.LAYOUTS, cleanrl.LAYOUT))
    if layout is not None:
        parts = _traced(_with_weights(layout.build(state, where), state, where), where, shape, env_id=named_env)
        return dataclasses.replace(parts, policy=layout.name)
    return sb3.read_state_dict(state, where=where, stem=stem, env_id=env_id, n_quantiles=n_quantiles)


def _is_sb3(source: Any) -> bool:
    """An SB3 / sb3-contrib model or policy (they hold a `q_net` or `quantile_net`)."""
    policy = getattr(source, "policy", source)
    return hasattr(policy, "q_net") or hasattr(policy, "quantile_net") or type(source).__module__.startswith(
        ("stable_baselines3.", "sb3_contrib."))


def _traced(module: nn.Module, where: str, shape: tuple[int, ...] | None, env_id: str | None) -> sb3.SB3Parts:
    """A module read by torch_graph, with the input scaling found in its forward (None: none found)."""
    shape = shape or torch_graph.infer_input_shape(module, where)
    traced = torch_graph.trace_q_network(module, shape, where)
    return sb3.SB3Parts(
        q_network=traced.network, algorithm="DQN", policy=type(module).__name__, observation_shape=shape,
        n_actions=None, sb3_version=None, env_id=env_id, source=where,
        input_scale=traced.input_scale, scale_folded=True,
        scale_reason="in the network's forward" if traced.input_scale else "neither the file nor the forward scales",
    )


def _with_weights(network: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """A copy of `network` holding the file's weights: the keys as saved, or under one common prefix
    (`q_net.` of an SB3 policy, `module.` of DataParallel)."""
    wanted = set(network.state_dict())
    candidates = [state, *({k.removeprefix(p): v for k, v in state.items() if k.startswith(p)}
                           for p in sorted({k.split(".", 1)[0] + "." for k in state if "." in k}))]
    fitting = next((c for c in candidates if set(c) == wanted), None)
    if fitting is None:
        missing, extra = sorted(wanted - set(state)), sorted(set(state) - wanted)
        raise CheckpointError(
            f"{where}: its weights do not fit the given network (missing {', '.join(missing[:3]) or 'none'}; "
            f"unexpected {', '.join(extra[:3]) or 'none'})"
        )
    loaded = copy.deepcopy(network)  # the caller's module keeps its own weights
    try:
        loaded.load_state_dict(fitting)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise CheckpointError(f"{where}: its weights do not fit the given network: {detail}") from None
    return loaded


def _apply_input_scale(parts: sb3.SB3Parts, given: float | None) -> tuple[nn.Sequential, str]:
    """Fold the input scale into the first layer (unless already there); return the network and a line
    saying which scale and why: recorded by the source, given as input_scale, or assumed."""
    recorded = parts.input_scale
    if recorded is not None and given is not None and not math.isclose(recorded, given, rel_tol=1e-6):
        raise ConfigError(f"{parts.source}: input_scale={_ratio(given)} contradicts the recorded input scaling "
                          f"x {_ratio(recorded)} ({parts.scale_reason})")
    if recorded is not None:
        scale, line = recorded, f"x {_ratio(recorded)} ({parts.scale_reason})"
    elif given is not None:
        scale, line = given, f"x {_ratio(given)} (input_scale given; the source records none)"
    else:
        scale = parts.default_scale
        line = f"x {_ratio(scale)} assumed ({parts.scale_reason}; if it was trained otherwise, pass input_scale=...)"
    net = parts.q_network
    if scale != 1.0 and not (recorded is not None and parts.scale_folded):
        first = next(m for m in net if isinstance(m, (nn.Conv2d, nn.Linear)))
        with torch.no_grad():
            scale_(first.weight, scale)
    return net, line


def _ratio(scale: float) -> str:
    """1/255 for 0.00392..., else the number itself."""
    inverse = 1 / scale
    return f"1/{round(inverse)}" if scale < 1 and math.isclose(inverse, round(inverse), rel_tol=1e-9) else f"{scale:g}"


def _validate(net: nn.Sequential, shape: tuple[int, ...], n_actions: int | None, source: str) -> int:
    """Check that `net` holds only convertible layers and maps `[1, *shape]` to `[1, n_actions]` (worked
    out without running it, `io.checks.check_shapes`); return n_actions."""
    for index, layer in enumerate(net):
        if not isinstance(layer, CONVERTIBLE_LAYERS):
            raise UnsupportedLayerError(
                f"{source}: layer {index} is a {type(layer).__name__}, which cannot be converted"
            )
    return check_shapes(net, shape, n_actions, source, CheckpointError)


def _dims(shape: tuple[int, ...] | torch.Size) -> str:
    return "x".join(str(int(d)) for d in shape)
