"""Binary coding's schedule (see `dqn2snn_plugin.binary_coding` for the neuron): layer after layer, each
integrating its whole T-bit input code, then sending its own.

The first layer integrates the analog observation, the same at every step (V = (2**T - 1) I); the
output layer integrates and never fires, and its membrane / (2**T - 1) is the Q-value, so all readouts
are that one value. Each T runs on its own: a shorter code is not the start of a longer one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dqn2snn_plugin.engine import READOUTS, native
from dqn2snn_plugin.engine.events import SimulationOptions

if TYPE_CHECKING:
    from dqn2snn_plugin.engine import Engine
    from dqn2snn_plugin.network import SpikingQNetwork


class BinarySchedule:
    """The binary-coded simulation of a `SpikingQNetwork` (see the module doc)."""

    def steps_held(self, Ts: list[int], batch: int, options: SimulationOptions, device: torch.device) -> int:
        """A layer holds all T spike planes at once."""
        return Ts[-1]

    def simulate(self, engine: Engine, net: SpikingQNetwork, x: torch.Tensor, Ts: list[int], block: int,
                 state: list[torch.Tensor] | None):
        """One batch chunk at each T: (readouts per T, final membranes, counts), the last two of the largest T."""
        results = {}
        for T in Ts:
            q, membranes, counts = self.code(engine, net, x, T)
            results[T] = dict.fromkeys(READOUTS, q)  # the output layer only integrates: one readout
        return results, membranes, counts

    @staticmethod
    def code(engine: Engine, net: SpikingQNetwork, x: torch.Tensor, T: int):
        """Binary coding at T bits on the float observations `x`: (Q-values [B, n_actions], final
        membranes, counts)."""
        levels = float(2**T - 1)
        v = net.synapses[0](x) * levels  # the analog input's current, the same at every step
        counts = engine.counter.new(x.shape[0], x)
        membranes = []
        # the backend's neurons send T-bit codes; another T than the network's gets fresh ones
        neurons = net.neurons if T == net.T else [net.backend.make_binary_neuron(T, net.initial_membrane)
                                                  for _ in net.neurons]
        for index, (neuron, synapse) in enumerate(zip(neurons, net.hidden_to_next)):
            fused = native.binary_layer(engine, net.backend, index, neuron, synapse, v, T, counts)
            if fused is not None:
                residual, v = fused
                membranes.append(residual)
                continue
            spikes, residual = net.backend.fire_binary(neuron, v)
            membranes.append(residual)
            engine.counter.count(index, spikes, counts)
            v = engine.synapses.integrated(synapse, spikes)
        membranes.append(v)
        return v / levels, membranes, counts  # the output stage is folded in Q units


SCHEDULE = BinarySchedule()
