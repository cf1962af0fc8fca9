"""Data-based layer-wise normalisation: one scale (lambda) per spiking layer, from calibration data.

lambda_l is the p-th percentile of layer l's post-ReLU activations over the *whole* calibration set
(an exact global order statistic, numpy's "linear" percentile definition), not a per-batch running
average as in SpikingJelly's own recipe. A spiking layer then sees its input current divided by
lambda_l, so an activation of lambda_l maps to one spike per time step.

Which values are ranked (`rank=`):
- "nonzero" (default): only the strictly positive values, so p is a percentile of the active
  neurons, as in Rueckauer et al.'s SNN toolbox that the paper's normalisation follows. On our Pong
  fixture at p = 99.9, T = 500 this gives 92% agreement against 87% for "all".
- "all": every post-ReLU value, zeros included (SpikingJelly's `VoltageHook`). Sparse layers push
  the percentile down, so more activations saturate; a low p can even land on a zero, which is
  refused, since a zero scale cannot normalise anything.
`percentile="max"` takes the maximum (the 100th percentile). `channel_wise=True` ranks each output
channel (or each unit of a Linear layer) separately and gives a vector of scales.

A few unusual states must not set a layer's scale (`state_trim`, default 2%): in each layer the
floor(N * state_trim / 100) calibration states with the largest activation are left out before
ranking (the output's |Q| scale is not trimmed). Measured with benchmarks/calibration_outliers.py
(2,000 calibration states of the DQN's own play, p = 99.9, rate coding at T = 64, agreement on 1,000
held-out states): an episode's first three states have zero-filled stack slots, 24 of the 2,000
(1.2%). On the Pong fixture they raise the scales of layers 2 and 3 from 0.555 and 0.238 (the same
play with first-frame copies) to 0.943 and 0.391, 1.7x; with the trim both plays give 0.555 and
0.238 (agreement 85.9% untrimmed, 86.7% trimmed). Made a motion detector (each first-layer filter
minus its mean over the 4 frames, as a copy-fill-trained agent may be), the Pong fixture's first
scale rises 5.4x (0.183 -> 0.997) and agreement falls to 88.3%; trimmed: 0.183 and 91.4%. On
Breakout the trim moves only the last hidden scale (0.284 -> 0.258) and agreement stays at
92.5-92.7%. `state_trim=0` is the plain global percentile (with `percentile="max"`: the paper's
max-norm). `scale_shares` reports the share of states above each layer's scale, i.e. how many states
set it: 1.2% for the untrimmed Pong layer 2 above, 93% trimmed.

The output layer is not a spiking layer: its Q-values keep their own units and are never divided by
their own percentile (the paper's code does; a losing agent's all-negative Q-values then give a
negative scale that flips every action). `output` below is only the scale used by the spike-count
readout's output neurons: the chosen percentile of |Q|, positive by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dqn2snn_plugin.errors import ConfigError, NormalizationError, UnsupportedLayerError

Rank = Literal["all", "nonzero"]
SYNAPSES = (nn.Conv2d, nn.Linear)
DEFAULT_STATE_TRIM = 2.0  # percent of calibration states left out per layer (see the module doc)


@dataclass(frozen=True)
class LayerScales:
    """Scales of one conversion: `hidden[l]` for the l-th ReLU (a 0-d tensor, or a vector per channel)."""

    hidden: tuple[torch.Tensor, ...]
    output: float
    percentile: float | str
    rank: Rank
    channel_wise: bool
    n_states: int
    state_trim: float = 0.0  # scales saved before the trim existed were untrimmed

    def as_dict(self) -> dict:
        """JSON-friendly form (scales as floats or lists of floats)."""
        return {
            "hidden": [s.tolist() for s in self.hidden],
            "output": self.output,
            "percentile": self.percentile,
            "rank": self.rank,
            "channel_wise": self.channel_wise,
            "n_states": self.n_states,
            "state_trim": self.state_trim,
        }


def check_percentile(percentile: float | str) -> float:
    """Return p as a float in (0, 100] ("max" -> 100.0), or raise ConfigError."""
    if isinstance(percentile, str):
        if percentile.strip().lower() == "max":
            return 100.0
        try:
            percentile = float(percentile)
        except ValueError:
            raise ConfigError(f"percentile must be a number in (0, 100] or 'max', got {percentile!r}") from None
    if isinstance(percentile, bool) or not (0.0 < float(percentile) <= 100.0):
        raise ConfigError(f"percentile must be in (0, 100] or 'max', got {percentile!r}")
    return float(percentile)


def check_network(network: nn.Sequential) -> None:
    """Raise UnsupportedLayerError unless `network` is Conv2d/Linear/ReLU/Flatten ending in a synapse."""
    if not isinstance(network, nn.Sequential):
        raise UnsupportedLayerError(f"expected an nn.Sequential Q-network, got {type(network).__name__}")
    for index, layer in enumerate(network):
        if not isinstance(layer, (*SYNAPSES, nn.ReLU, nn.Flatten)):
            raise UnsupportedLayerError(
                f"layer {index} ({type(layer).__name__}) cannot be converted: only Conv2d, Linear, ReLU "
                "and Flatten are supported"
            )
    if not any(isinstance(layer, nn.ReLU) for layer in network):
        raise UnsupportedLayerError("the network has no ReLU: there is nothing to turn into spiking neurons")
    if not isinstance(network[-1], SYNAPSES):
        raise UnsupportedLayerError(
            f"the network must end with a Linear layer producing Q-values, not {type(network[-1]).__name__}"
        )


@torch.no_grad()
def record_activations(network: nn.Sequential, observations: torch.Tensor, batch_size: int = 512):
    """Post-ReLU activations of every ReLU layer and the final outputs, over all observations."""
    hidden: list[list[torch.Tensor]] = [[] for layer in network if isinstance(layer, nn.ReLU)]
    outputs = []
    for start in range(0, len(observations), batch_size):
        x = observations[start : start + batch_size]
        relu_index = 0
        for layer in network:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                hidden[relu_index].append(x)
                relu_index += 1
        outputs.append(x)
    return [torch.cat(chunks) for chunks in hidden], torch.cat(outputs)


def _order_statistic(values: torch.Tensor, p: float) -> torch.Tensor:
    """numpy-style linear percentile along the last dim, exact (two k-th order statistics)."""
    n = values.shape[-1]
    position = p / 100.0 * (n - 1)
    low, high = math.floor(position), math.ceil(position)
    v_low = torch.kthvalue(values, low + 1, dim=-1).values
    if high == low:
        return v_low
    v_high = torch.kthvalue(values, high + 1, dim=-1).values
    return v_low + (v_high - v_low) * (position - low)


def percentile_scale(activations: torch.Tensor, p: float, rank: Rank, channel_wise: bool) -> torch.Tensor:
    """The p-th percentile of `activations` ([N, C, ...] or [N, F]); per channel if channel_wise."""
    if rank not in ("all", "nonzero"):
        raise ConfigError(f"rank must be 'all' or 'nonzero', got {rank!r}")
    per_channel = activations.transpose(0, 1).reshape(activations.shape[1], -1)
    rows = per_channel if channel_wise else per_channel.reshape(1, -1)
    scales = []
    for row in rows:
        values = row[row > 0] if rank == "nonzero" else row
        if values.numel() == 0:
            scales.append(torch.tensor(0.0))
        elif p == 100.0:
            scales.append(values.max())
        else:
            scales.append(_order_statistic(values.float(), p))
    scale = torch.stack(scales)
    return scale if channel_wise else scale[0]


def check_state_trim(state_trim: float) -> float:
    """Return the trim as a float in [0, 50), or raise ConfigError."""
    if isinstance(state_trim, bool) or not isinstance(state_trim, (int, float)) or not 0.0 <= state_trim < 50.0:
        raise ConfigError(f"state_trim must be a percentage of states in [0, 50), got {state_trim!r}")
    return float(state_trim)


def trim_states(activations: torch.Tensor, state_trim: float) -> torch.Tensor:
    """`activations` [N, ...] without the floor(N * state_trim / 100) states holding the largest values."""
    n_out = math.floor(len(activations) * state_trim / 100.0)
    if n_out == 0:
        return activations
    peaks = activations.reshape(len(activations), -1).amax(dim=1)
    keep = torch.ones(len(activations), dtype=torch.bool)
    keep[peaks.topk(n_out).indices] = False
    return activations[keep]


def layer_scales(
    network: nn.Sequential,
    observations: torch.Tensor,
    percentile: float | str = 99.9,
    *,
    rank: Rank = "nonzero",
    channel_wise: bool = False,
    batch_size: int = 512,
    state_trim: float = DEFAULT_STATE_TRIM,
) -> LayerScales:
    """Compute every spiking layer's lambda (and the readout's output scale) on float observations;
    `state_trim` percent of the states, those with each layer's largest activations, are left out of
    that layer's ranking (see the module doc)."""
    check_network(network)
    p = check_percentile(percentile)
    trim = check_state_trim(state_trim)
    hidden_acts, outputs = record_activations(network, observations, batch_size)
    hidden = []
    for index, acts in enumerate(hidden_acts):
        acts = trim_states(acts, trim)
        scale = percentile_scale(acts, p, rank, channel_wise=False)
        check_scale(scale, f"hidden layer {index}")
        if channel_wise:  # a channel that is never active keeps the layer's scale: any positive value works
            per_channel = percentile_scale(acts, p, rank, channel_wise=True)
            scale = torch.where(per_channel > 0, per_channel, scale)
        hidden.append(scale)
    output = float(percentile_scale(outputs.abs(), p, "all", channel_wise=False))
    check_scale(torch.tensor(output), "output layer (|Q|)")
    return LayerScales(tuple(hidden), output, percentile, rank, channel_wise, len(observations), trim)


@torch.no_grad()
def scale_shares(network: nn.Sequential, observations: torch.Tensor, scales: LayerScales,
                 batch_size: int = 512) -> tuple[float, ...]:
    """Per spiking layer, the share of `observations` with an activation above the layer's scale (per
    channel: above its channel's scale): the states that set the scale. A share of a few percent or
    less says a minority of unusual states decides how the whole layer is normalised."""
    hidden_acts, _ = record_activations(network, observations, batch_size)
    if len(hidden_acts) != len(scales.hidden):
        raise ConfigError(f"the scales are for {len(scales.hidden)} spiking layers, the network has {len(hidden_acts)}")
    shares = []
    for acts, scale in zip(hidden_acts, scales.hidden):
        limit = scale.reshape(1, -1, *([1] * (acts.ndim - 2))) if scale.ndim else scale
        shares.append(float((acts > limit).reshape(len(acts), -1).any(dim=1).double().mean()))
    return tuple(shares)


def check_scale(scale: torch.Tensor, where: str) -> None:
    """Refuse a scale that is zero, negative or non-finite (anywhere, for a per-channel vector)."""
    if not torch.isfinite(scale).all():
        raise NormalizationError(f"{where}: scale is not finite ({scale.tolist()})")
    if (scale <= 0).any():
        raise NormalizationError(
            f"{where}: scale must be positive, got {scale.tolist() if scale.ndim == 0 else 'a non-positive entry'};"
            " the layer is (almost) never active on the calibration set: use rank='nonzero', a higher "
            "percentile, or more varied calibration states"
        )
