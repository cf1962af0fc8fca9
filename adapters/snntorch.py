"""snnTorch adapter: the same spiking Q-network built from `snn.Leaky` neurons.

snnTorch has no conversion utility; an IF neuron is `snn.Leaky(beta=1, threshold=1,
reset_mechanism="subtract")` with its default `reset_delay=True` (the reset of a spike is applied at
the next step; we subtract it from the final membrane ourselves so that states match SpikingJelly's).
State is passed explicitly, per network: snnTorch appends every neuron to a class-global list
(`SpikingNeuron.instances`) that `snntorch.utils.reset` walks; we take ours out of it so that one
network's reset never touches another's and old networks can be freed.
"""

from __future__ import annotations

import snntorch
import torch
from snntorch._neurons.neurons import SpikingNeuron
from torch import nn


class SnnTorchBackend:
    """Runs snnTorch Leaky neurons (beta = 1: integrate-and-fire) step by step over T."""

    name = "snntorch"

    def make_neuron(self, initial_membrane: float) -> nn.Module:
        node = snntorch.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract")
        if node in SpikingNeuron.instances:
            SpikingNeuron.instances.remove(node)
        return node

    def run(self, node: nn.Module, current: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`v` is the membrane after the last reset (SpikingJelly's convention, carried between time
        blocks and decisions). snnTorch derives a pending reset from the membrane it is given, so a
        saturated neuron (v >= threshold after its reset) would be reset twice: the first step's
        input is raised by exactly that spurious reset."""
        threshold = node.threshold
        spikes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        mem = v.clone()
        for t in range(current.shape[0]):
            step = current[t] if t else current[0] + (v > threshold).to(current.dtype) * threshold
            spikes[t], mem = node(step, mem)
        return spikes, mem - spikes[-1] * threshold
