"""The synaptic passes: event-driven where few inputs spike, dense otherwise; and the speed knobs.

Event-driven (on CPU): each spike adds its weight column to its targets (`fused_scan.events`), so a
layer costs its spike count, not its size; the currents differ from a dense pass by rounding only
(the same sums in another order). Which pass runs is decided per call from the input firing rate,
by the thresholds in `SimulationOptions`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from dqn2snn_plugin import binary_coding
from dqn2snn_plugin._native import fused_scan


@dataclass
class SimulationOptions:
    """Memory and speed knobs of a simulation; results do not depend on them."""

    max_elements: int = 2**27
    """neuron-steps held at once; larger batches are simulated in chunks"""
    block_samples: int | None = None
    """time steps are simulated in blocks of about this many samples / B; None: 512 on CPU (the block
    stays in cache), 32768 on a GPU (fewer, larger kernel launches)"""
    event_driven: bool = True
    """synapses read the spikes event by event when few neurons fire"""
    sparse_rate: float = 0.1
    """with `sparse_rows`: where the event-driven pass beats the dense one (2 CPU cores, Nature CNN layers,
    measured by `benchmarks/simulation_speed.py --profile`): rate coding's [T*B] spike maps below an input
    firing rate of sparse_rate + sparse_rows / maps (few maps: the dense pass is bound by reading the weights)"""
    sparse_rows: float = 1.5
    sparse_rate_planes: float = 0.3
    """binary coding's weighted planes, which sum into [B] membranes, go event-driven below this input rate"""
    sparse_changes: float = 0.5
    """delta coding's changes go event-driven (one graded event each) below this fraction of changed inputs; a
    first choice: at 26% changed (Breakout fc1, B = 1) the dense float64 pass took 2.5x the event-driven one"""
    sparse_min_inputs: int = 1024
    """narrower layers stay dense: the event-driven pass's fixed cost outweighs"""

    def rate_limit(self, maps: int) -> float:
        """The input firing rate below which rate coding's `maps` spike maps go event-driven."""
        return self.sparse_rate + self.sparse_rows / maps


@functools.cache
def bit_weights(T: int) -> torch.Tensor:
    """2**(T-1-t) for t = 0 .. T-1 (float64): the weight of each step's spike in a T-bit code."""
    return torch.tensor([2.0 ** (T - 1 - t) for t in range(T)], dtype=torch.float64)


def event_layer(synapse: nn.Sequential) -> nn.Module | None:
    """The stage's Conv2d / Linear if the stage is that layer alone (a Flatten before it allowed)."""
    *before, last = synapse
    ok = isinstance(last, (nn.Conv2d, nn.Linear)) and all(isinstance(m, nn.Flatten) for m in before)
    return last if ok else None


def integrated_densely(synapse: nn.Sequential, spikes: torch.Tensor) -> torch.Tensor:
    """Binary coding's next membrane by dense passes: the currents of all T*B planes, integrated by doubling."""
    return binary_coding.integrate(synapse(spikes.flatten(0, 1)).unflatten(0, spikes.shape[:2]))


class Synapses:
    """Runs synaptic stages on spike trains, event-driven where it pays; keeps each layer's weight
    transposed for the event-driven pass (output dimension last) until the weight changes."""

    def __init__(self, options: SimulationOptions) -> None:
        self.options = options
        self._weights_t: dict[int, tuple[tuple, torch.Tensor]] = {}  # per layer: its weight, output last

    def current(self, synapse: nn.Sequential, spikes: torch.Tensor) -> torch.Tensor:
        """The next layer's input current [T, B, ...] from spikes [T, B, ...]: event-driven on CPU when few
        inputs spike, otherwise one dense batched pass over all T*B spike maps."""
        flat = spikes.flatten(0, 1)
        out = self._events(synapse, flat)
        return (synapse(flat) if out is None else out).unflatten(0, spikes.shape[:2])

    def integrated(self, synapse: nn.Sequential, spikes: torch.Tensor) -> torch.Tensor:
        """Binary coding's next membrane [B, ...] from spike planes [T, B, ...]: sum_t 2**(T-1-t) I_t.

        Event-driven as weighted spikes where few inputs spike (a spike of step t adds 2**(T-1-t)
        times its weights: one event each); otherwise dense currents integrated by doubling.
        """
        out = self._events(synapse, spikes, bit_weights(spikes.shape[0]))
        return integrated_densely(synapse, spikes) if out is None else out

    def _events(self, synapse: nn.Sequential, spikes: torch.Tensor, scales: torch.Tensor | None = None):
        """`fused_scan.events` through the stage's weighted layer, or None (then a dense pass)."""
        if spikes.device.type != "cpu":
            return None
        weighted = self.target(synapse, (spikes[0] if scales is None else spikes[0, 0]).numel())
        if weighted is None:
            return None
        x = spikes.flatten(1 if scales is None else 2) if isinstance(weighted, nn.Linear) else spikes  # [rows, F]
        limit = self.options.rate_limit(spikes.shape[0]) if scales is None else self.options.sparse_rate_planes
        return fused_scan.events(x, weighted, self.weight(weighted), scales=scales, max_fraction=limit)

    def target(self, synapse: nn.Sequential, inputs: int) -> nn.Module | None:
        """The layer an event-driven pass would run for `synapse`, whose spike maps hold `inputs` neurons
        each; None where it stays dense (switched off, another kind of stage, a narrow layer)."""
        weighted = event_layer(synapse) if self.options.event_driven else None
        return weighted if weighted is not None and inputs >= self.options.sparse_min_inputs else None

    def weight(self, layer: nn.Module) -> torch.Tensor:
        """The weight with its output dimension last (each input's targets contiguous), kept until the
        weight changes (in place: its version counter moves; or by .to() / .double(): its storage
        moves). One entry per layer."""
        weight = layer.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self._weights_t.get(id(layer))
        if cached is None or cached[0] != key:
            cached = self._weights_t[id(layer)] = (key, weight.detach().permute(*range(1, weight.ndim), 0).contiguous())
        return cached[1]
