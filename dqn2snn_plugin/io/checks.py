"""The checks every network passes where it enters the plugin, whichever way it comes in: a loaded DQN
(`checkpoint.load_dqn`), a saved SNN (`io.store.load_snn`), a NIR graph (`io.nir_graph.from_nir`,
`adapters.nir.load_nir` and `run_nir`), precomputed scales (`conversion.convert`).

A file can hold anything: NaN weights, integer or float16 weights, a layer spec that asks for gigabytes,
scales of zero or NaN, an action count the network does not have, a T of a billion. Each check refuses
such a value in one line that names the file or object (`where`) and the field, with the error class the
caller passes (CheckpointError for checkpoints and saved SNNs, NirError for NIR graphs), before anything is
built or allocated from it: shapes are worked out on torch's "meta" device, which holds no values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.coding import check_T
from dqn2snn_plugin.engine import READOUTS
from dqn2snn_plugin.errors import ConfigError, Dqn2SnnError
from dqn2snn_plugin.normalization import SYNAPSES, LayerScales, check_state_trim

FLOAT_DTYPES = (torch.float32, torch.float64)
# values one observation puts through all layers: the Nature CNN's are 55,000; this many float32 are 512 MiB
MAX_ACTIVATIONS = 2**27
Error = type[Dqn2SnnError]


def memory_bytes() -> int:
    """The machine's physical memory: the most any run here could hold at once."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device: "cpu", or "cuda" / "cuda:i" where that GPU exists (ConfigError otherwise)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be 'cpu' or 'cuda', got {device!r}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for but no CUDA GPU is available: use device='cpu'")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPUs")
    return parsed


def check_tensor(value: object, field: str, where: str, error: Error, *, ndim: int | None = None) -> torch.Tensor:
    """`value` (a tensor or an array) as a tensor of float32 or float64 finite values with `ndim` dimensions."""
    try:
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise error(f"{where}: {field} is not an array of numbers") from None
    if tensor.dtype not in FLOAT_DTYPES:
        raise error(f"{where}: {field} holds {str(tensor.dtype).removeprefix('torch.')} values: expected float32 "
                    "or float64")
    if ndim is not None and tensor.ndim != ndim:
        raise error(f"{where}: {field} has shape {tuple(tensor.shape)}: expected {ndim} dimensions")
    if not torch.isfinite(tensor).all():
        raise error(f"{where}: {field} holds NaN or infinite values")
    return tensor


def check_parameters(network: nn.Module, where: str, error: Error) -> None:
    """Every weight and bias of `network` a float32 / float64 tensor of finite values."""
    for name, tensor in network.state_dict().items():
        check_tensor(tensor, name, where, error)


def check_observation_shape(shape: object, where: str, error: Error) -> tuple[int, ...]:
    """One observation's shape: one to three positive integers, at most `MAX_ACTIVATIONS` values."""
    dims = shape if isinstance(shape, (list, tuple)) else None
    if (not dims or len(dims) > 3 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                                         for d in dims)):
        raise error(f"{where}: observation shape {shape!r} is not one to three positive integers")
    if math.prod(dims) > MAX_ACTIVATIONS:
        raise error(f"{where}: observation shape {tuple(dims)} holds more than {MAX_ACTIVATIONS:,} values")
    return tuple(int(d) for d in dims)


def activation_shapes(network: nn.Sequential, observation_shape: tuple[int, ...], where: str,
                      error: Error) -> list[tuple[int, ...]]:
    """The shape (without the batch) after each layer of `network` for one observation, worked out on
    the meta device (no memory, no arithmetic); `error` when the layers do not fit each other or the
    observation, or when one observation would put more than `MAX_ACTIVATIONS` values through them."""
    dtype = next((t.dtype for t in network.state_dict().values() if t.is_floating_point()), torch.float32)
    x = torch.empty(1, *observation_shape, device="meta", dtype=dtype)
    shapes, total = [], x.numel()
    for index, layer in enumerate(network):
        state = {name: tensor.to("meta") for name, tensor in layer.state_dict().items()}
        try:
            x = torch.func.functional_call(layer, state, (x,))
        except (RuntimeError, ValueError, IndexError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise error(f"{where}: the layer shapes do not match each other or the observation shape "
                        f"{observation_shape} (layer {index}, {type(layer).__name__}: {detail})") from None
        total += x.numel()
        if total > MAX_ACTIVATIONS:
            raise error(f"{where}: one observation of shape {observation_shape} puts more than {MAX_ACTIVATIONS:,} "
                        f"values through the layers (at layer {index}): not a Q-network this plugin can run")
        shapes.append(tuple(x.shape[1:]))
    return shapes


def check_shapes(network: nn.Sequential, observation_shape: object, n_actions: object, where: str,
                 error: Error) -> int:
    """`network` maps one observation of `observation_shape` to `n_actions` values (None: any number);
    returns the number of outputs. Nothing is allocated (`activation_shapes`)."""
    shape = check_observation_shape(observation_shape, where, error)
    out = activation_shapes(network, shape, where, error)[-1] if len(network) else shape
    if len(out) != 1:
        raise error(f"{where}: the network gives outputs of shape {out} per observation, not one value per action")
    if n_actions is not None and (isinstance(n_actions, bool) or n_actions != out[0]):
        raise error(f"{where}: the network has {out[0]} outputs but the action space has {n_actions!r} actions")
    return out[0]


def spiking_channels(network: nn.Sequential) -> list[int]:
    """The channels (Conv2d) or units (Linear) of each spiking layer: the synapse before each ReLU."""
    channels, last = [], None
    for layer in network:
        if isinstance(layer, SYNAPSES):
            last = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        elif isinstance(layer, nn.ReLU):
            channels.append(last)
    return channels


def check_scales(scales: LayerScales, channels: Sequence[int], where: str, error: Error) -> LayerScales:
    """Scales that fit a network with spiking layers of `channels`: one per layer, each one value or one
    per channel, every one finite and positive; the output scale too; the labels of their known kinds."""
    if len(scales.hidden) != len(channels):
        raise error(f"{where}: the scales are for {len(scales.hidden)} spiking layers, the network has {len(channels)}")
    for index, (scale, count) in enumerate(zip(scales.hidden, channels)):
        field = f"scales.hidden[{index}]"
        scale = check_tensor(scale, field, where, error)
        if not (scale.ndim == 0 or (scale.ndim == 1 and scale.numel() in (1, count))):
            raise error(f"{where}: {field} has shape {tuple(scale.shape)}: expected one value or one per channel "
                        f"({count})")
        if (scale <= 0).any():
            raise error(f"{where}: {field} holds a scale <= 0: every scale must be positive")
    output = scales.output
    if isinstance(output, bool) or not isinstance(output, (int, float)) or not (math.isfinite(output) and output > 0):
        raise error(f"{where}: scales.output is {output!r}: expected a positive finite number")
    if scales.rank not in ("all", "nonzero"):
        raise error(f"{where}: scales.rank is {scales.rank!r}: expected 'all' or 'nonzero'")
    if not isinstance(scales.percentile, (int, float, str)) or isinstance(scales.percentile, bool):
        raise error(f"{where}: scales.percentile is {scales.percentile!r}: expected a number or a label")
    if not isinstance(scales.channel_wise, bool):
        raise error(f"{where}: scales.channel_wise is {scales.channel_wise!r}: expected true or false")
    if isinstance(scales.n_states, bool) or not isinstance(scales.n_states, int) or scales.n_states < 0:
        raise error(f"{where}: scales.n_states is {scales.n_states!r}: expected a count of states")
    try:
        check_state_trim(scales.state_trim)
    except ConfigError as exc:
        raise error(f"{where}: scales.{exc}") from None
    return scales


def check_run_options(where: str, error: Error, *, T: object, readout: object, v_init: object) -> tuple[int, str, float]:
    """A network's stored T (`coding.check_T`), readout (one of `engine.READOUTS`) and initial membrane
    (finite, in [0, 1): below the threshold), as (T, readout, v_init)."""
    try:
        T = check_T(T)
    except ConfigError as exc:
        raise error(f"{where}: {exc}") from None
    if readout not in READOUTS:
        raise error(f"{where}: readout {readout!r} is not one of {', '.join(READOUTS)}")
    if isinstance(v_init, bool) or not isinstance(v_init, (int, float)) or not (math.isfinite(v_init) and 0 <= v_init < 1):
        raise error(f"{where}: initial membrane v_init {v_init!r} must be a number in [0, 1) (threshold units)")
    return T, readout, float(v_init)


def check_allocation(n_bytes: int, what: str, error: Error) -> None:
    """`error` when `what` would need more memory than this machine has."""
    if n_bytes > memory_bytes():
        raise error(f"{what} needs about {n_bytes / 2**30:,.1f} GiB of memory, more than this machine's "
                    f"{memory_bytes() / 2**30:,.1f} GiB")
