"""What one decision costs: operation and memory counts per layer, and their energy under a table of constants.

The field no longer accepts "synaptic ops x 0.9 pJ vs MACs x 4.6 pJ" on its own: Dampfhoffer et al.
(IEEE TETCI 2023) and Lemaire et al. (ICONIP 2022) also count the neuron (membrane) updates of every
time step and the memory traffic of weights and membranes, and compare against an int8 ANN. So do
these counts (formulas and assumptions: docs/costs.md):

- SNN (`CostMeter`, `snn_cost`), per synaptic stage and the neuron layer it feeds:
  - synaptic events: accumulates, one per spike per synapse (the engine's own count, `last_stats`); the
    first stage takes the observation: dense MACs once per decision for an analog input (the engine
    computes that current once), events where the input is binary (MinAtar's planes are spikes already)
    or Poisson; a coding whose events carry a graded payload (`Coding.graded_events`: delta coding)
    prices each event as a multiply-accumulate and takes its input events from the simulation;
  - neuron updates: neurons x the steps they are simulated (or the simulation's own count where it
    gives one), one add each plus a membrane read and write;
  - weight bytes read: one weight per synaptic event (`weight_reads="per_event"`, event-driven hardware
    fetches the weights of each spike's targets), every weight once per decision ("per_decision"), or per
    stage the lesser of the two ("least": a chip that keeps a kernel while it serves all of that kernel's
    events of the decision, as the DQN's own count assumes; a stage with fewer events than weights still
    reads per event);
- DQN (`dqn_cost`): MACs per layer, each weight read once, each input activation read once and each
  output written once (ideal reuse: a lower bound for the DQN, so the verdict does not flatter the SNN).

`CostMeter` adds up the counts of many simulated batches (every decision of the SNN's games, in
`evaluate`) and prices their mean; `snn_cost` is the meter on one batch. Energy = sum of counts x the
constants of an `EnergyTable` (`dqn2snn_plugin.energy`, default `HOROWITZ_45NM`); pass another table
to re-price the same counts. `compare_with_dqn` sets an SNN's report against the DQN's in int8 and fp32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from dqn2snn_plugin.energy import (
    HOROWITZ_45NM, CostComparison, CostReport, EnergyTable, LayerCost, Precision, WeightReads, check_precision,
    check_weight_reads, verdict,
)
from dqn2snn_plugin.engine.stats import SimulationStats, fan_out, weighted
from dqn2snn_plugin.errors import ConfigError
from dqn2snn_plugin.observations import observation_batch

if TYPE_CHECKING:
    from dqn2snn_plugin.checkpoint import DQNCheckpoint
    from dqn2snn_plugin.network import SpikingQNetwork

__all__ = ["HOROWITZ_45NM", "CostComparison", "CostMeter", "CostReport", "EnergyTable", "LayerCost", "compare_with_dqn",
           "dqn_cost", "snn_cost", "verdict"]

# bytes of a weight and of a neuron's state (membrane or activation) at each precision: int8 weights and
# activations; an int8 SNN's membranes accumulate int8 weights, so they are 32-bit like any accumulator
_WEIGHT_BYTES = {"fp32": 4, "int8": 1}
_ACTIVATION_BYTES = {"fp32": 4, "int8": 1}
_MEMBRANE_BYTES = {"fp32": 4, "int8": 4}


def _name(number: int, layer: nn.Module) -> str:
    """A weighted layer's row label: "conv2d 1", "linear 4"."""
    return f"{type(layer).__name__.lower()} {number}"


def _macs(layer: nn.Module, out: torch.Tensor) -> int:
    """Multiply-accumulates of one dense pass: conv out elements x kernel x in_channels / groups, linear in x out."""
    if isinstance(layer, nn.Conv2d):
        return out[0].numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
    return layer.in_features * layer.out_features


def _shapes(stages: list[nn.Module], observation_shape: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of each stage on one zero observation."""
    weight = next(p for stage in stages for p in stage.parameters())
    x = torch.zeros(1, *observation_shape, dtype=weight.dtype, device=weight.device)
    pairs = []
    with torch.no_grad():
        for stage in stages:
            y = stage(x)
            pairs.append((x, y))
            x = y
    return pairs


def _neuron_steps(snn: SpikingQNetwork, T: int) -> tuple[int, int]:
    """Updates per neuron and decision of (a hidden layer, the output layer), as the engine schedules them.

    Where all layers run at once (rate coding: latency T for any depth) every layer takes T steps. Where
    layers run one after another (binary coding: latency T per layer) a hidden layer integrates its input
    code (T doublings) and then fires its own (T steps); the output layer only integrates (T).
    """
    sequential = snn.coding.latency(T, 2) > snn.coding.latency(T, 1)
    return (2 * T if sequential else T), T


class CostMeter:
    """The per-layer counts of an SNN's decisions, added one simulated batch at a time (`add`), priced
    as their mean per decision (`report`).

    `evaluate` adds every decision the SNN takes in its games (`experiments.evaluation`), so its energy
    per decision is over the states the SNN visited; `snn_cost` adds one batch. The counts are sums, so
    pricing them once equals pricing each decision and averaging.
    """

    def __init__(self, snn: SpikingQNetwork) -> None:
        self.snn = snn
        stages = list(snn.synapses)
        self._layers = []  # (row label, neurons, weights, MACs of a dense pass) per weighted layer
        for index, (stage, (_, out)) in enumerate(zip(stages, _shapes(stages, snn.observation_shape))):
            layer = weighted(stage)
            self._layers.append((_name(index + 1, layer), out[0].numel(), layer.weight.numel(), _macs(layer, out)))
        self._input_fan = fan_out(stages[0], snn.observation_shape).flatten().double()
        self._observation_size = self._input_fan.numel()
        # each spiking layer's fan-out per neuron as [channel, position], and whether a channel's neurons share one
        fans = [fan.detach().double().cpu().reshape(fan.shape[0], -1) for fan in snn.engine.counter.fan_outs]
        self._channel_fan = [fan.mean(1) for fan in fans]
        self._layer_fan = [float(fan.mean()) for fan in fans]
        self._uniform_channels = [bool((fan == fan[:, :1]).all()) for fan in fans]
        self._uniform_layer = [bool((fan == fan.flatten()[0]).all()) for fan in fans]
        self.decisions = 0
        self._Ts: set[int] = set()
        self._dense = 0  # decisions whose first stage is a dense pass
        self._input_spikes = self._input_events = self._synaptic_ops = 0.0
        self._spikes = [0.0] * len(fans)
        self._channels: list[torch.Tensor] | None = [torch.zeros(len(f), dtype=torch.float64) for f in fans]
        self._updates = [0.0] * len(self._layers)
        self._counted_updates = False  # whether the simulation gave its own neuron updates

    def add(self, stats: SimulationStats, observations) -> None:
        """Add one simulated batch: `stats` (the network's `last_stats`) of `observations` (what it was given)."""
        x = observation_batch(observations, self.snn.observation_shape).cpu()
        batch = stats.synaptic_ops.shape[0]
        if x.shape[0] != batch:
            raise ConfigError(f"stats are for {batch} observations, got {x.shape[0]}")
        self.decisions += batch
        self._Ts.add(stats.T)
        if stats.input_events is not None:  # the simulation counts its own input events (delta coding)
            self._input_spikes += _sum(stats.input_events)
            self._input_events += _sum(stats.input_synaptic_ops)
        else:
            spikes, events, dense = self._input(x, stats.T)
            self._input_spikes, self._input_events, self._dense = (
                self._input_spikes + spikes, self._input_events + events, self._dense + dense)
        for layer, spikes in enumerate(stats.spikes):
            self._spikes[layer] += _sum(spikes)
        if self._channels is not None and len(stats.channel_spikes) == len(self._channels):
            for layer, channels in enumerate(stats.channel_spikes):
                self._channels[layer] += channels.detach().double().cpu()
        else:
            self._channels = None  # a batch without them: each layer's total spikes x its mean fan-out
        self._synaptic_ops += _sum(stats.synaptic_ops)
        if stats.neuron_updates is not None:
            self._counted_updates = True
            for layer, updates in enumerate(stats.neuron_updates):
                self._updates[layer] += _sum(updates)
        else:
            hidden, output = _neuron_steps(self.snn, stats.T)
            for layer, (_, neurons, _, _) in enumerate(self._layers):
                self._updates[layer] += neurons * (output if layer == len(self._layers) - 1 else hidden) * batch

    def _input(self, x: torch.Tensor, T: int) -> tuple[float, float, int]:
        """(input spikes, synaptic events, dense decisions) of the first stage, summed over the batch.

        An analog observation is one dense pass (the engine computes that current once per decision) unless
        every value is 0 or 1: then it is a spike map already (MinAtar's planes), and each nonzero input adds
        its weights once. Poisson input: the expected spikes of T steps, each adding its weights.
        """
        flat = x.flatten(1).double()
        if self.snn.input_coding == "poisson":
            spikes, dense = (flat / self.snn.input_max).clamp(0, 1) * T, 0
        else:
            binary = ((flat == 0) | (flat == 1)).all(1)
            spikes, dense = (flat != 0).double() * binary[:, None], int((~binary).sum())
        return float(spikes.sum()), float((spikes @ self._input_fan).sum()), dense

    def _hidden_events(self) -> list[float]:
        """Synaptic events per decision leaving each spiking layer, summing to the engine's exact total.

        The engine counts spikes x fan-out per neuron but keeps only the sum over layers and spikes per
        channel. Where a channel's neurons share one fan-out (fully connected layers, a convolution without
        border effects) channel spikes x fan-out is exact; elsewhere it uses the channel's mean fan-out, and
        those layers are scaled together to the exact total (exact whenever only one layer is estimated).
        Without spikes per channel, each layer's spikes x its mean fan-out, exact where all share one.
        """
        if self._channels is not None:
            events = [float(c @ fan) for c, fan in zip(self._channels, self._channel_fan)]
            exact = self._uniform_channels
        else:
            events = [s * fan for s, fan in zip(self._spikes, self._layer_fan)]
            exact = self._uniform_layer
        estimated = sum(e for e, sure in zip(events, exact) if not sure)
        rest = self._synaptic_ops - sum(e for e, sure in zip(events, exact) if sure)
        scale = rest / estimated if estimated else 1.0
        return [(e if sure else e * scale) / self.decisions for e, sure in zip(events, exact)]

    def report(self, precision: Precision = "fp32", weight_reads: WeightReads = "per_event",
               table: EnergyTable = HOROWITZ_45NM) -> CostReport:
        """The mean cost of one decision of the decisions added, priced at `precision` ("fp32": what the
        engine simulates; "int8": int8 weights, 32-bit membranes, a price only) with `weight_reads`
        ("per_event", "per_decision" or "least", see the module doc) under `table`."""
        check_precision(precision)
        check_weight_reads(weight_reads)
        if not self.decisions:
            raise ConfigError("no decision was added to the cost meter: nothing to price")
        n, snn = self.decisions, self.snn
        w_bytes, m_bytes, a_bytes = _WEIGHT_BYTES[precision], _MEMBRANE_BYTES[precision], _ACTIVATION_BYTES[precision]
        graded = snn.coding.graded_events
        event_price = table.mac(precision) if graded else table.add(precision)
        # bytes of one neuron's state: its membrane, and for graded events the last level it sent
        state = m_bytes + (a_bytes if graded else 0)
        dense = self._dense / n
        spikes = [self._input_spikes / n, *(s / n for s in self._spikes)]
        events = [self._input_events / n, *self._hidden_events()]
        layers = []
        for index, (name, neurons, weights, macs) in enumerate(self._layers):
            cost = LayerCost(name, neurons, spikes=spikes[index], synaptic_events=events[index],
                             neuron_updates=self._updates[index] / n)
            dense_share = dense if index == 0 else 0.0  # a dense pass reads every weight once, like the DQN
            cost.macs = macs * dense_share
            per_event = (cost.synaptic_events + weights * dense_share) * w_bytes
            cost.weight_bytes = {"per_event": per_event, "per_decision": weights * w_bytes,
                                 "least": min(per_event, weights * w_bytes)}[weight_reads]
            cost.state_bytes = cost.neuron_updates * state * 2  # read and write the state at each update
            cost.compute_pj = (cost.macs * table.mac(precision) + cost.synaptic_events * event_price
                               + cost.neuron_updates * table.add(precision))
            cost.weight_pj = cost.weight_bytes * table.sram(weights * w_bytes)
            cost.state_pj = cost.state_bytes / 2 * table.sram(neurons * state) * (1 + table.write_per_read)
            if dense_share:  # a dense pass reads the observation once, as the DQN's first layer does
                observation = self._observation_size * a_bytes
                cost.state_bytes += dense_share * observation
                cost.state_pj += dense_share * observation * table.sram(observation)
            layers.append(cost)
        Ts = sorted(self._Ts)
        T = Ts[0] if len(Ts) == 1 else Ts
        if self._counted_updates:
            updates: object = "counted by the simulation"
        else:
            hidden, output = _neuron_steps(snn, Ts[-1])
            updates = {"hidden": hidden, "output": output}
        first = "dense" if dense == 1 else "events" if dense == 0 else f"dense on {dense:.1%} of decisions"
        settings = {"coding": str(snn.coding), "T": T, "input_coding": snn.input_coding, "first_stage": first,
                    "precision": precision, "weight_reads": weight_reads, "synaptic_event": "mac" if graded else "add",
                    "table": table.name, "decisions": n, "neuron_steps": updates}
        return CostReport(f"SNN {snn.coding} T={T} ({precision})", layers, settings)


def _sum(values: torch.Tensor) -> float:
    return float(values.detach().double().sum())


def snn_cost(snn: SpikingQNetwork, observations, T: int | None = None, *, stats: SimulationStats | None = None,
             precision: Precision = "fp32", weight_reads: WeightReads = "per_event",
             table: EnergyTable = HOROWITZ_45NM) -> CostReport:
    """The cost of one decision of `snn` on `observations`, averaged over them (a `CostMeter` of one batch).

    Simulates `observations` at T (default: the network's) unless `stats` (the `last_stats` of that very
    simulation) is given. `precision`: "fp32" (what the engine simulates) or "int8" (int8 weights, 32-bit
    membranes: the price of a quantised deployment, whose decisions this does not simulate).
    `weight_reads`: "per_event" (each synaptic event reads its weight), "per_decision" (each weight once) or
    "least" (per stage, the lesser of the two).
    """
    check_precision(precision)
    check_weight_reads(weight_reads)
    if stats is None:
        snn.readouts(observations, T)
        stats = snn.last_stats
    meter = CostMeter(snn)
    meter.add(stats, observations)
    return meter.report(precision, weight_reads, table)


def dqn_cost(checkpoint: DQNCheckpoint, precision: Precision = "int8", *, table: EnergyTable = HOROWITZ_45NM) -> CostReport:
    """The cost of one decision of the DQN itself at `precision` (int8: int8 weights and activations,
    32-bit accumulators): per weighted layer its MACs, each weight read once, its input activations
    read once and its outputs written once (the ReLU and the bias add are not priced)."""
    check_precision(precision)
    w_bytes, a_bytes = _WEIGHT_BYTES[precision], _ACTIVATION_BYTES[precision]
    modules = list(checkpoint.q_network)
    layers, number = [], 0
    for module, (inp, out) in zip(modules, _shapes(modules, checkpoint.observation_shape)):
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        number += 1
        weights = module.weight.numel()
        cost = LayerCost(_name(number, module), neurons=out[0].numel(), macs=_macs(module, out),
                         weight_bytes=weights * w_bytes, state_bytes=(inp[0].numel() + out[0].numel()) * a_bytes)
        array = max(inp[0].numel(), out[0].numel()) * a_bytes
        cost.compute_pj = cost.macs * table.mac(precision)
        cost.weight_pj = cost.weight_bytes * table.sram(weights * w_bytes)
        cost.state_pj = (inp[0].numel() + out[0].numel() * table.write_per_read) * a_bytes * table.sram(array)
        layers.append(cost)
    return CostReport(f"DQN ({precision})", layers, {"precision": precision, "table": table.name})


def compare_with_dqn(snn: CostReport, checkpoint: DQNCheckpoint, table: EnergyTable = HOROWITZ_45NM) -> CostComparison:
    """`snn`'s cost against the DQN `checkpoint` in int8 and in fp32, under `table` (the one `snn` was priced with)."""
    return CostComparison(snn, dqn_cost(checkpoint, "int8", table=table), dqn_cost(checkpoint, "fp32", table=table),
                          table)
