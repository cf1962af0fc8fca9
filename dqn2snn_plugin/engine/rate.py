"""Rate coding's schedule: every layer runs all T steps at once ("multi-step"), layer after layer.

Each synaptic layer runs one batched pass over [T*B] inputs, each neuron layer one IF scan over T.
With the paper's analog input (the observation injected at every step) the first layer's current is
the same at every step, so it is computed once. Spikes equal those of step-by-step simulation (a test
checks it). IF is causal, so the T steps may run in blocks that chain exactly (the block keeps the
working set in cache), and a run of max(Ts) steps gives the readouts of every shorter T on the way.

Readouts, all in Q-value units so they compare with the DQN:
- "spikes": output spike count N * lambda_out / T (output neurons fire on Q / lambda_out).
- "spikes+membrane": (N + V_T - V_0) * lambda_out / T, the paper's "robust firing rate".
- "membrane": a non-spiking integrating output, the mean output current (sum_t I_t / T).

The state a decision hands on is its final membranes, or, with the network's `residual_carry`
(`network.ResidualCarry`, CRPI), the next decision's start computed from them, from this decision's
start and from every neuron's summed input (kept only then: one sum over T per layer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.engine import native
from dqn2snn_plugin.engine.events import SimulationOptions
from dqn2snn_plugin.engine.stats import Counts, weighted

if TYPE_CHECKING:
    from dqn2snn_plugin.engine import Engine
    from dqn2snn_plugin.network import SpikingQNetwork


def if_scan(current: torch.Tensor, v: torch.Tensor, threshold: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference IF dynamics over T: H = V + I; S = [H >= threshold]; V = H - S * threshold.

    The same equations as SpikingJelly's soft-reset `IFNode`, in place and without the per-step
    copies its trainable kernel keeps for backward (about 4x faster on CPU). On CPU the loop runs
    as one C call where it can (`dqn2snn_plugin._native.fused_scan`, bit-identical); this is its reference.
    """
    fused = fused_scan.if_scan(current, v, threshold)
    if fused is not None:
        return fused
    v = v.clone()
    spikes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
    for t in range(current.shape[0]):
        step = spikes[t]
        v += current[t]
        torch.ge(v, threshold, out=step)
        v.sub_(step, alpha=threshold)
    return spikes, v


def poisson_current(net: SpikingQNetwork, x: torch.Tensor, T: int) -> torch.Tensor:
    """First layer's input current [T, B, ...] from Bernoulli spike trains with rate x / input_max."""
    rates = (x / net.input_max).clamp(0, 1).expand(T, *x.shape)
    spikes_in = torch.bernoulli(rates, generator=net.generator) * net.input_max
    return net.synapses[0](spikes_in.flatten(0, 1)).unflatten(0, (T, x.shape[0]))


class RateSchedule:
    """The rate-coded simulation of a `SpikingQNetwork` (see the module doc)."""

    def steps_held(self, Ts: list[int], batch: int, options: SimulationOptions, device: torch.device) -> int:
        """Time steps per block: about `block_samples` / B."""
        block_samples = options.block_samples or (512 if device.type == "cpu" else 32768)
        return max(1, min(Ts[-1], block_samples // batch))

    def simulate(self, engine: Engine, net: SpikingQNetwork, x: torch.Tensor, Ts: list[int], block: int,
                 state: list[torch.Tensor] | None):
        """One batch chunk, `block` time steps at a time: (readouts per T, final membranes, counts)."""
        batch = x.shape[0]
        state = list(self.fresh_state(net, batch) if state is None else state)
        state, starts = list(state), list(state)  # the scans return new membranes: `starts` stay as they were
        carry = net.residual_carry if net.carry_state else None
        inputs: list[torch.Tensor | float] = [0.0] * len(net.neurons)  # summed input per hidden neuron (carry only)
        first = net.synapses[0](x) if net.input_coding == "analog" else None  # constant: computed once
        counts = engine.counter.new(batch, x)
        out_v0, integrated, count = state[-1].clone(), 0.0, 0.0
        results, done = {}, 0
        for end in sorted(set(range(block, Ts[-1], block)) | set(Ts)):
            steps = end - done
            current = first.expand(steps, *first.shape) if first is not None else poisson_current(net, x, steps)
            for index, (neuron, synapse) in enumerate(zip(net.neurons, net.hidden_to_next)):
                if carry is not None:
                    inputs[index] = inputs[index] + current.sum(0)
                state[index], current = self.layer(engine, net, index, neuron, synapse, current, state[index], counts)
            # `current` is now the output layer's input in Q units, [steps, B, n_actions]
            out_spikes, state[-1] = net.backend.run(net.output_neuron, current / net.scales.output, state[-1])
            integrated, count, done = integrated + current.sum(0), count + out_spikes.sum(0), end
            if end in Ts:
                results[end] = {
                    "spikes": count * net.scales.output / end,
                    # N + V - V0: with no leak, exactly the integrated input (the paper's robust rate)
                    "spikes+membrane": (count + state[-1] - out_v0) * net.scales.output / end,
                    "membrane": integrated / end,
                }
        if carry is not None:
            inputs.append(integrated / net.scales.output)
            state = [carry.next_start(net.initial_membrane, *membranes) for membranes in zip(starts, state, inputs)]
        return results, state, counts

    @staticmethod
    def fresh_state(net: SpikingQNetwork, batch: int) -> list[torch.Tensor]:
        """`batch` rows of membranes at the initial membrane, in the network's dtype and device."""
        weight = weighted(net.synapses[0]).weight
        shapes = [f.shape for f in net.engine.counter.fan_outs] + [(net.n_actions,)]
        return [torch.full((batch, *shape), net.initial_membrane, dtype=weight.dtype, device=weight.device)
                for shape in shapes]

    @staticmethod
    def layer(engine: Engine, net: SpikingQNetwork, index: int, neuron, synapse, current: torch.Tensor,
              v: torch.Tensor, counts: Counts) -> tuple[torch.Tensor, torch.Tensor]:
        """One spiking layer and the synapses after it: (final membrane, next current [T, B, ...]); one
        fused call where it applies (`native.rate_layer`), else scan, count and synaptic pass in turn."""
        fused = native.rate_layer(engine, net.backend, index, neuron, synapse, current, v, counts)
        if fused is not None:
            return fused
        spikes, v = net.backend.run(neuron, current, v)
        engine.counter.count(index, spikes, counts)
        return v, engine.synapses.current(synapse, spikes)


SCHEDULE = RateSchedule()
