"""What one decision costs: operation and memory counts per layer, and their energy under a table of constants.

The field no longer accepts "synaptic ops x 0.9 pJ vs MACs x 4.6 pJ" on its own: Dampfhoffer et al.
(IEEE TETCI 2023) and Lemaire et al. (ICONIP 2022) also count the neuron (membrane) updates of every
time step and the memory traffic of weights and membranes, and compare against an int8 ANN. So do
these counts (formulas and assumptions: docs/costs.md):

- SNN (`snn_cost`), per synaptic stage and the neuron layer it feeds:
  - synaptic events: accumulates, one per spike per synapse (the engine's own count, `last_stats`); the
    first stage takes the observation: dense MACs once per decision for an analog input (the engine
    computes that current once), events where the input is binary (MinAtar's planes are spikes already)
    or Poisson;
  - neuron updates: neurons x the steps they are simulated, one add each plus a membrane read and write;
  - weight bytes read: one weight per synaptic event (`weight_reads="per_event"`, event-driven hardware
    fetches the weights of each spike's targets) or every weight once per decision ("per_decision");
- DQN (`dqn_cost`): MACs per layer, each weight read once, each input activation read once and each
  output written once (ideal reuse: a lower bound for the DQN, so the verdict does not flatter the SNN).

Energy = sum of counts x the constants of an `EnergyTable` (default `HOROWITZ_45NM`); pass another
table to re-price the same counts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from dqn2snn_plugin.engine.stats import SimulationStats, fan_out, weighted
from dqn2snn_plugin.errors import ConfigError
from dqn2snn_plugin.observations import observation_batch

if TYPE_CHECKING:
    from dqn2snn_plugin.checkpoint import DQNCheckpoint
    from dqn2snn_plugin.network import SpikingQNetwork

Precision = Literal["fp32", "int8"]
WeightReads = Literal["per_event", "per_decision"]

_HOROWITZ = "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm"


def _constant(value: float, unit: str, source: str) -> float:
    return field(default=value, metadata={"unit": unit, "source": source})


@dataclass(frozen=True)
class EnergyTable:
    """The energy of each primitive operation and memory access; `HOROWITZ_45NM` is the default.

    Each field's metadata holds its unit and source (`EnergyTable.sources()`). A swapped table (another
    process node, measured numbers) re-prices the same counts: `snn_cost(..., table=my_table)`.
    """

    name: str = "Horowitz 2014, 45 nm"
    fp32_mult: float = _constant(3.7, "pJ", _HOROWITZ + ": 32-bit float multiply")
    fp32_add: float = _constant(0.9, "pJ", _HOROWITZ + ": 32-bit float add")
    int8_mult: float = _constant(0.2, "pJ", _HOROWITZ + ": 8-bit integer multiply")
    int32_add: float = _constant(0.1, "pJ", _HOROWITZ + ": 32-bit integer add (int8 products accumulate in 32 bits)")
    sram_8kb: float = _constant(10 / 8, "pJ/byte", _HOROWITZ + ": 64-bit read of an 8 KB SRAM, 10 pJ / 8 bytes")
    sram_32kb: float = _constant(20 / 8, "pJ/byte", _HOROWITZ + ": 64-bit read of a 32 KB SRAM, 20 pJ / 8 bytes")
    sram_1mb: float = _constant(100 / 8, "pJ/byte", _HOROWITZ + ": 64-bit read of a 1 MB SRAM, 100 pJ / 8 bytes; "
                                "also used beyond 1 MB (optimistic: Horowitz gives 1.3-2.6 nJ per 64 bits of DRAM)")
    write_per_read: float = _constant(1.0, "ratio", "assumption: an SRAM write costs a read (Horowitz gives reads)")

    @classmethod
    def sources(cls) -> dict[str, str]:
        """{constant: "unit; source"} for every priced field."""
        return {f.name: f"{f.metadata['unit']}; {f.metadata['source']}" for f in fields(cls) if f.metadata}

    def mac(self, precision: Precision) -> float:
        """One multiply-accumulate: fp32 multiply + fp32 add (4.6 pJ), or int8 multiply + int32 add (0.3 pJ)."""
        return self.fp32_mult + self.fp32_add if _check(precision) == "fp32" else self.int8_mult + self.int32_add

    def add(self, precision: Precision) -> float:
        """One accumulate (a synaptic event, a membrane update): an fp32 add, or an int32 add for int8 weights."""
        return self.fp32_add if _check(precision) == "fp32" else self.int32_add

    def sram(self, array_bytes: int) -> float:
        """pJ per byte read from the smallest SRAM of Horowitz's three (8 KB, 32 KB, 1 MB) that holds `array_bytes`."""
        for size, energy in ((8 << 10, self.sram_8kb), (32 << 10, self.sram_32kb)):
            if array_bytes <= size:
                return energy
        return self.sram_1mb

    def scaled(self, factor: float) -> EnergyTable:
        """Every constant times `factor` (e.g. a process node's rough scaling); the ratio stays."""
        priced = {f.name: getattr(self, f.name) * factor for f in fields(self) if f.metadata and f.name != "write_per_read"}
        return replace(self, name=f"{self.name} x {factor:g}", **priced)


HOROWITZ_45NM = EnergyTable()

# bytes of a weight and of a neuron's state (membrane or activation) at each precision: int8 weights and
# activations; an int8 SNN's membranes accumulate int8 weights, so they are 32-bit like any accumulator
_WEIGHT_BYTES = {"fp32": 4, "int8": 1}
_ACTIVATION_BYTES = {"fp32": 4, "int8": 1}
_MEMBRANE_BYTES = {"fp32": 4, "int8": 4}


def _check(precision: str) -> str:
    if precision not in _WEIGHT_BYTES:
        raise ConfigError(f"precision must be 'fp32' or 'int8', got {precision!r}")
    return precision


@dataclass
class LayerCost:
    """One synaptic stage and the neurons it feeds, per decision (means over the observations).

    `state_bytes`: membrane (SNN) or activation (DQN) bytes read and written; energies in pJ.
    """

    name: str
    neurons: int
    macs: float = 0.0
    synaptic_events: float = 0.0
    neuron_updates: float = 0.0
    spikes: float = 0.0
    weight_bytes: float = 0.0
    state_bytes: float = 0.0
    compute_pj: float = 0.0
    weight_pj: float = 0.0
    state_pj: float = 0.0

    @property
    def energy_pj(self) -> float:
        return self.compute_pj + self.weight_pj + self.state_pj


_SUMMED = ("neurons", "macs", "synaptic_events", "neuron_updates", "spikes", "weight_bytes", "state_bytes",
           "compute_pj", "weight_pj", "state_pj")


@dataclass
class CostReport:
    """Per-layer and total cost of one decision of one network; `settings` says what was assumed."""

    network: str
    layers: list[LayerCost]
    settings: dict[str, object]

    @property
    def total(self) -> LayerCost:
        return LayerCost("total", **{k: sum(getattr(layer, k) for layer in self.layers) for k in _SUMMED})

    @property
    def energy_pj(self) -> float:
        return self.total.energy_pj

    def to_json(self) -> str:
        rows = [{**asdict(layer), "energy_pj": layer.energy_pj} for layer in [*self.layers, self.total]]
        return json.dumps({"network": self.network, "settings": self.settings, "layers": rows}, indent=1)

    def markdown(self) -> str:
        """A table: one row per layer and the total; counts per decision, energies in nJ."""
        head = ("| layer | neurons | MACs | synaptic events | neuron updates | spikes in | weight bytes | state bytes "
                "| compute nJ | weights nJ | state nJ | energy nJ |\n" + "|---" * 12 + "|")
        rows = [f"| {c.name} | {c.neurons:,} | {c.macs:,.0f} | {c.synaptic_events:,.0f} | {c.neuron_updates:,.0f} | "
                f"{c.spikes:,.0f} | {c.weight_bytes:,.0f} | {c.state_bytes:,.0f} | {c.compute_pj / 1e3:,.2f} | "
                f"{c.weight_pj / 1e3:,.2f} | {c.state_pj / 1e3:,.2f} | {c.energy_pj / 1e3:,.2f} |"
                for c in [*self.layers, self.total]]
        return "\n".join([f"**{self.network}**", "", head, *rows])


def verdict(snn: CostReport, dqn: CostReport) -> str:
    """One line: the ratio SNN energy / DQN energy and whether the SNN is cheaper (compare with the int8 DQN)."""
    ratio = snn.energy_pj / dqn.energy_pj
    word = "cheaper" if ratio < 1 else "not cheaper"
    return f"{snn.network} / {dqn.network} energy = {ratio:.3g}: the SNN is {word}"


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


def _input_events(snn: SpikingQNetwork, x: torch.Tensor, T: int) -> tuple[float, float, bool]:
    """(input spikes, synaptic events, dense) of the first stage per decision.

    An analog observation is one dense pass (the engine computes that current once per decision) unless
    every value is 0 or 1: then it is a spike map already (MinAtar's planes), and each nonzero input adds
    its weights once. Poisson input: the expected spikes of T steps, each adding its weights.
    """
    fan = fan_out(snn.synapses[0], snn.observation_shape).to(x)
    if snn.input_coding == "poisson":
        spikes = (x / snn.input_max).clamp(0, 1) * T
    elif bool(((x == 0) | (x == 1)).all()):
        spikes = (x != 0).to(x)
    else:
        return 0.0, 0.0, True
    batch = x.shape[0]
    return float(spikes.sum()) / batch, float((spikes * fan).sum()) / batch, False


def _hidden_events(snn: SpikingQNetwork, stats: SimulationStats) -> list[float]:
    """Synaptic events per decision leaving each spiking layer, summing to the engine's exact total.

    The engine counts spikes x fan-out per neuron but keeps only the sum over layers and spikes per
    channel. Where a channel's neurons share one fan-out (fully connected layers, a convolution without
    border effects) channel spikes x fan-out is exact; elsewhere it uses the channel's mean fan-out, and
    those layers are scaled together to the exact total (exact whenever only one layer is estimated).
    """
    batch = stats.synaptic_ops.shape[0]
    exact, events = [], []
    for channel_spikes, fan in zip(stats.channel_spikes, snn.engine.counter.fan_outs):
        per_channel = fan.reshape(fan.shape[0], -1).float()
        exact.append(bool((per_channel == per_channel[:, :1]).all()))
        events.append(float((channel_spikes.float().cpu() * per_channel.mean(1).cpu()).sum()) / batch)
    estimated = sum(e for e, sure in zip(events, exact) if not sure)
    rest = float(stats.synaptic_ops.float().mean()) - sum(e for e, sure in zip(events, exact) if sure)
    scale = rest / estimated if estimated else 1.0
    return [e if sure else e * scale for e, sure in zip(events, exact)]


def _priced(cost: LayerCost, weights: int, w_bytes: int, m_bytes: int, precision: Precision,
            table: EnergyTable) -> LayerCost:
    """Fill in `cost`'s energies from its counts."""
    cost.compute_pj = cost.macs * table.mac(precision) + (cost.synaptic_events + cost.neuron_updates) * table.add(precision)
    cost.weight_pj = cost.weight_bytes * table.sram(weights * w_bytes)
    cost.state_pj = cost.state_bytes / 2 * table.sram(cost.neurons * m_bytes) * (1 + table.write_per_read)
    return cost


def snn_cost(snn: SpikingQNetwork, observations, T: int | None = None, *, stats: SimulationStats | None = None,
             precision: Precision = "fp32", weight_reads: WeightReads = "per_event",
             table: EnergyTable = HOROWITZ_45NM) -> CostReport:
    """The cost of one decision of `snn` on `observations`, averaged over them.

    Simulates `observations` at T (default: the network's) unless `stats` (the `last_stats` of that very
    simulation) is given. `precision`: "fp32" (what the engine simulates) or "int8" (int8 weights, 32-bit
    membranes: the price of a quantised deployment, whose decisions this does not simulate).
    `weight_reads`: "per_event" (each synaptic event reads its weight) or "per_decision" (each weight once).
    """
    _check(precision)
    if weight_reads not in ("per_event", "per_decision"):
        raise ConfigError(f"weight_reads must be 'per_event' or 'per_decision', got {weight_reads!r}")
    weight = weighted(snn.synapses[0]).weight  # the network's dtype and device, as its simulation
    x = observation_batch(observations, snn.observation_shape).to(device=weight.device, dtype=weight.dtype)
    if stats is None:
        snn.readouts(x, T)
        stats = snn.last_stats
    if stats.synaptic_ops.shape[0] != x.shape[0]:
        raise ConfigError(f"stats are for {stats.synaptic_ops.shape[0]} observations, got {x.shape[0]}")
    T = stats.T
    hidden_steps, output_steps = _neuron_steps(snn, T)
    w_bytes, m_bytes = _WEIGHT_BYTES[precision], _MEMBRANE_BYTES[precision]
    stages = list(snn.synapses)
    input_spikes, input_events, dense = _input_events(snn, x, T)
    spikes = [input_spikes, *(float(s.float().mean()) for s in stats.spikes)]
    events = [input_events, *_hidden_events(snn, stats)]
    layers = []
    for index, (stage, (_, out)) in enumerate(zip(stages, _shapes(stages, snn.observation_shape))):
        layer = weighted(stage)
        weights = layer.weight.numel()
        cost = LayerCost(_name(index + 1, layer), neurons=out[0].numel(), spikes=spikes[index],
                         synaptic_events=events[index])
        dense_pass = index == 0 and dense  # MACs that read every weight once, like the DQN
        cost.macs = _macs(layer, out) if dense_pass else 0
        cost.weight_bytes = weights * w_bytes if dense_pass or weight_reads == "per_decision" else cost.synaptic_events * w_bytes
        cost.neuron_updates = cost.neurons * (output_steps if index == len(stages) - 1 else hidden_steps)
        cost.state_bytes = cost.neuron_updates * m_bytes * 2  # read and write the membrane at each update
        layers.append(_priced(cost, weights, w_bytes, m_bytes, precision, table))
    settings = {"coding": str(snn.coding), "T": T, "input_coding": snn.input_coding, "first_stage": "dense" if dense else "events",
                "precision": precision, "weight_reads": weight_reads, "table": table.name, "observations": int(x.shape[0]),
                "neuron_steps": {"hidden": hidden_steps, "output": output_steps}}
    return CostReport(f"SNN {snn.coding} T={T} ({precision})", layers, settings)


def dqn_cost(checkpoint: DQNCheckpoint, precision: Precision = "int8", *, table: EnergyTable = HOROWITZ_45NM) -> CostReport:
    """The cost of one decision of the DQN itself at `precision` (int8: int8 weights and activations,
    32-bit accumulators): per weighted layer its MACs, each weight read once, its input activations
    read once and its outputs written once (the ReLU and the bias add are not priced)."""
    _check(precision)
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
