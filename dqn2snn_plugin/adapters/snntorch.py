"""snnTorch adapter: the same spiking Q-network built from snnTorch neurons.

Rate coding:
snnTorch has no conversion utility; an IF neuron is `snn.Leaky(beta=1, threshold=1,
reset_mechanism="subtract")` with its default `reset_delay=True` (the reset of a spike is applied at
the next step; we subtract it from the final membrane ourselves so that states match SpikingJelly's).
State is passed explicitly, per network: snnTorch appends every neuron to a class-global list
(`SpikingNeuron.instances`) that `snntorch.utils.reset` walks; we take ours out of it so that one
network's reset never touches another's and old networks can be freed.

Binary coding: snnTorch has no few-spikes neuron, so `BinaryFewSpikes` is one, a `SpikingNeuron`
with snnTorch's step convention (`spk, mem = neuron(input_, mem)`).
"""

from __future__ import annotations

import snntorch
import torch
from snntorch._neurons.neurons import SpikingNeuron
from torch import nn

from dqn2snn_plugin.binary_coding import check_bits


class BinaryFewSpikes(SpikingNeuron):
    """Sends its membrane as a T-bit code, most significant bit first, in T steps (binary coding).

    `binary_coding.fire` halves the threshold at each step; here, equivalently, the threshold stays
    2**(T-1) and the membrane doubles after each reset by subtraction (scaling by 2 is exact):

        mem = mem + input_;  spk = [mem > 2**(T-1)];  mem = 2 * (mem - spk * 2**(T-1))

    Feed the gate (least-significant-bit units) as `input_` at the first step and zeros after; `mem`
    starts at `initial_membrane` (0.5: round to the nearest level, 0: truncate), which `init_mem`
    returns. As every snnTorch neuron it fires strictly above threshold (`spike_grad`, default
    snnTorch's atan surrogate), so a membrane exactly on a threshold sends 0 where `binary_coding.fire`
    sends 1; with real-valued inputs that takes an exact tie.

    Args:
        bits: T, the number of steps and bits.
        initial_membrane: the membrane at the start of a decision, in least significant bits.
        spike_grad, surrogate_disable: as for every snnTorch neuron.
    """

    def __init__(self, bits: int, initial_membrane: float = 0.5, spike_grad=None, surrogate_disable: bool = False):
        super().__init__(threshold=float(2 ** (check_bits(bits) - 1)), spike_grad=spike_grad,
                         surrogate_disable=surrogate_disable, reset_mechanism="subtract")
        self.bits = bits
        self.initial_membrane = float(initial_membrane)

    def init_mem(self, like: torch.Tensor) -> torch.Tensor:
        """The membrane at the start of a decision, shaped like the gate `like`."""
        return torch.full_like(like, self.initial_membrane)

    def forward(self, input_: torch.Tensor, mem: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mem = (self.init_mem(input_) if mem is None else mem) + input_
        spk = self.fire(mem)
        return spk, 2 * (mem - spk * self.threshold)


def _unlisted(node: SpikingNeuron) -> SpikingNeuron:
    """Take `node` out of snnTorch's class-global instance list (see the module doc)."""
    if node in SpikingNeuron.instances:
        SpikingNeuron.instances.remove(node)
    return node


class SnnTorchBackend:
    """Runs snnTorch neurons step by step: Leaky (beta = 1: integrate-and-fire) for rate coding,
    `BinaryFewSpikes` for binary coding."""

    name = "snntorch"

    def make_neuron(self, initial_membrane: float) -> nn.Module:
        return _unlisted(snntorch.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract"))

    def make_binary_neuron(self, bits: int, initial_membrane: float) -> nn.Module:
        return _unlisted(BinaryFewSpikes(bits, initial_membrane))

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

    def scan_threshold(self, node: nn.Module, current: torch.Tensor) -> None:
        """None: a Leaky's reset delay is not the IF scan of `engine.native`, so its layers run step by step."""
        return None

    def binary_start(self, node: BinaryFewSpikes, v: torch.Tensor) -> None:
        """None: `BinaryFewSpikes` fires strictly above threshold, not as `binary_coding.fire`."""
        return None

    def fire_binary(self, node: BinaryFewSpikes, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Send gate `v` ([B, ...], least significant bits) as node.bits spikes: spikes [T, B, ...] and the
        residual membrane in least significant bits (as `binary_coding.fire`)."""
        spikes = torch.empty((node.bits, *v.shape), dtype=v.dtype, device=v.device)
        spk, mem = node(v)
        spikes[0] = spk
        for t in range(1, node.bits):
            spikes[t], mem = node(torch.zeros_like(v), mem)
        return spikes, mem / 2**node.bits  # doubled T times since the first step
