"""What a simulation counts: spikes per layer, sample and channel, and synaptic operations (spikes x fan-out);
for delta coding also the input's changes and the neurons each decision updates (`ChangeCounts`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from dqn2snn_plugin._native import fused_scan


@dataclass
class SimulationStats:
    """What the last call did: spikes per layer and sample, firing rates, synaptic operations."""

    T: int
    spikes: list[torch.Tensor] = field(default_factory=list)  # per layer: [B] spike totals over T
    neurons: list[int] = field(default_factory=list)  # per layer: number of neurons
    synaptic_ops: torch.Tensor | None = None  # [B] spikes times fan-out, summed over layers
    channel_spikes: list[torch.Tensor] = field(default_factory=list)  # per layer: [C] totals over B, space, T
    # delta coding only (None for the others; `engine.delta`): `spikes` counts graded events (changed levels)
    input_events: torch.Tensor | None = None  # [B] changed observation values this decision
    input_synaptic_ops: torch.Tensor | None = None  # [B] those changes times their fan-out into the first stage
    neuron_updates: list[torch.Tensor] | None = None  # per layer, the output layer too: [B] neurons whose
    # membrane received at least one event this decision (updated and quantised again)
    binary_spikes: list[torch.Tensor] | None = None  # per spiking layer: [B] spikes the same changes would take
    # as signed binary spikes (the ones of |change| in binary), to compare with graded events

    def channel_rates(self, positions: list[int]) -> list[torch.Tensor]:
        """Mean spikes per neuron per step of each channel ([C] per layer); `positions` = neurons per channel."""
        batch = self.spikes[0].shape[0]
        return [c / (batch * n * self.T) for c, n in zip(self.channel_spikes, positions)]

    @property
    def firing_rates(self) -> list[float]:
        """Mean spikes per neuron per time step, for each spiking layer."""
        return [float(s.float().mean()) / (n * self.T) for s, n in zip(self.spikes, self.neurons)]

    @property
    def spikes_per_decision(self) -> float:
        """Mean number of spikes in all hidden layers for one decision."""
        return float(sum(s.float().mean() for s in self.spikes))


class ChangeCounts(NamedTuple):
    """Delta coding's further counts of one batch chunk (see `SimulationStats`)."""

    input_events: torch.Tensor  # [B]
    input_synaptic_ops: torch.Tensor  # [B]
    neuron_updates: list[torch.Tensor]  # per layer with the output layer: [B]
    binary_spikes: list[torch.Tensor]  # per spiking layer: [B]


class Counts(NamedTuple):
    """Running spike counts of one batch chunk."""

    totals: list[torch.Tensor]  # per spiking layer: [B] spikes
    synaptic_ops: torch.Tensor  # [B] spikes times fan-out, summed over layers
    channels: list[torch.Tensor]  # per spiking layer: [C] spikes
    changes: ChangeCounts | None = None  # delta coding's


def weighted(stage: nn.Sequential) -> nn.Module:
    """The Conv2d or Linear layer of a synaptic stage."""
    return next(layer for layer in stage if isinstance(layer, (nn.Conv2d, nn.Linear)))


def fan_out(synapse: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Number of synapses leaving each input neuron of `synapse` (its column of the weight pattern)."""
    x = torch.ones(1, *input_shape, requires_grad=True)
    with torch.enable_grad():
        probe = _weights_to_ones(synapse)
        probe(x).sum().backward()
    return x.grad[0].detach()


def _weights_to_ones(synapse: nn.Module) -> nn.Module:
    layers = []
    for layer in synapse:
        if isinstance(layer, nn.Conv2d):
            ones = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                             layer.padding, bias=False)
            nn.init.ones_(ones.weight)
            layers.append(ones)
        elif isinstance(layer, nn.Linear):
            ones = nn.Linear(layer.in_features, layer.out_features, bias=False)
            nn.init.ones_(ones.weight)
            layers.append(ones)
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


def joined(chunks: list[torch.Tensor]) -> torch.Tensor:
    """The batch chunks as one tensor (a single chunk as it is: no copy)."""
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class Counter:
    """The fan-out of every spiking layer of a network, and the counting of its spikes.

    Args:
        synapses: the network's synaptic stages (one before each spiking layer, one after the last).
        observation_shape: what the first stage takes, without the batch dimension.
    """

    def __init__(self, synapses: list[nn.Sequential], observation_shape: tuple[int, ...]) -> None:
        with torch.no_grad():
            shapes = []
            weight = weighted(synapses[0]).weight
            x = torch.zeros(1, *observation_shape, device=weight.device, dtype=weight.dtype)
            for synapse in synapses:
                shapes.append(tuple(x.shape[1:]))
                x = synapse(x)
        self.fan_outs = [fan_out(synapse, shape).to(x.device) for synapse, shape in zip(synapses[1:], shapes[1:])]
        self.neurons_per_sample = sum(int(f.numel()) for f in self.fan_outs) + int(x.shape[1])

    @property
    def channel_positions(self) -> list[int]:
        """Neurons per channel in each spiking layer (H*W for convolutions, 1 for fully connected)."""
        return [int(f[0].numel()) if f.ndim > 1 else 1 for f in self.fan_outs]

    def new(self, batch: int, like: torch.Tensor) -> Counts:
        """Zeroed counts for `batch` samples, in `like`'s dtype and device."""
        zeros = {"dtype": like.dtype, "device": like.device}
        return Counts([torch.zeros(batch, **zeros) for _ in self.fan_outs], torch.zeros(batch, **zeros),
                      [torch.zeros(f.shape[0], **zeros) for f in self.fan_outs])

    def count(self, layer: int, spikes: torch.Tensor, counts: Counts) -> None:
        """Add spiking layer `layer`'s spikes [T, B, ...] to `counts`, in place."""
        fan = self.fan(layer, spikes)
        if fused_scan.tally(spikes, fan, counts.totals[layer], counts.channels[layer], counts.synaptic_ops):
            return
        per_neuron = spikes.sum(0)
        counts.totals[layer] += per_neuron.flatten(1).sum(1)
        counts.channels[layer] += per_neuron.sum(0).flatten(1).sum(1) if per_neuron.ndim > 2 else per_neuron.sum(0)
        counts.synaptic_ops.add_((per_neuron * fan).flatten(1).sum(1))

    def fan(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        """Spiking layer `layer`'s synapses per neuron, on `like`'s device and dtype (moved once, then kept)."""
        fan = self.fan_outs[layer]
        if fan.device != like.device or fan.dtype != like.dtype:
            fan = self.fan_outs[layer] = fan.to(like)
        return fan

    def stats(self, T: int, chunks: list[Counts]) -> SimulationStats:
        """The statistics of a call whose batch chunks counted `chunks`, the longest run being T steps."""
        stats = SimulationStats(T, neurons=[int(f.numel()) for f in self.fan_outs])
        stats.spikes = [joined(list(layer)) for layer in zip(*(c.totals for c in chunks))]
        stats.synaptic_ops = joined([c.synaptic_ops for c in chunks])
        stats.channel_spikes = [sum(layer[1:], layer[0]) for layer in zip(*(c.channels for c in chunks))]
        if chunks[0].changes is not None:
            changes = [c.changes for c in chunks]
            stats.input_events = joined([c.input_events for c in changes])
            stats.input_synaptic_ops = joined([c.input_synaptic_ops for c in changes])
            stats.neuron_updates = [joined(list(layer)) for layer in zip(*(c.neuron_updates for c in changes))]
            stats.binary_spikes = [joined(list(layer)) for layer in zip(*(c.binary_spikes for c in changes))]
        return stats
