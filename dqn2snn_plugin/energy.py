"""Prices and priced costs: the energy table (`EnergyTable`, default `HOROWITZ_45NM`), the cost of one
decision per layer (`LayerCost`, `CostReport`) and the SNN against the DQN (`CostComparison`).

`costs` counts a network's operations and memory traffic and fills these in; this module holds only
the records and their JSON form, without torch, so that result files (`experiments.records`) read
back, and the command line builds its options, without loading any network code. Formulas, constants
and sources: docs/costs.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

from dqn2snn_plugin.errors import ConfigError

Precision = Literal["fp32", "int8"]
WeightReads = Literal["per_event", "per_decision", "least"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
WEIGHT_READS: tuple[str, ...] = ("per_event", "per_decision", "least")

_HOROWITZ = "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm"


def check_precision(precision: str) -> str:
    """`precision` if it is "fp32" or "int8"; ConfigError naming it otherwise."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be 'fp32' or 'int8', got {precision!r}")
    return precision


def check_weight_reads(weight_reads: str) -> str:
    """`weight_reads` if it is "per_event", "per_decision" or "least"; ConfigError naming it otherwise."""
    if weight_reads not in WEIGHT_READS:
        raise ConfigError(f"weight_reads must be 'per_event', 'per_decision' or 'least', got {weight_reads!r}")
    return weight_reads


def _constant(value: float, unit: str, source: str) -> float:
    return field(default=value, metadata={"unit": unit, "source": source})


@dataclass(frozen=True)
class EnergyTable:
    """The energy of each primitive operation and memory access; `HOROWITZ_45NM` is the default.

    Each field's metadata holds its unit and source (`EnergyTable.sources()`). A swapped table (another
    process node, measured numbers) re-prices the same counts: `snn_cost(..., table=my_table)`, or
    `RunSettings(energy_table=my_table)` for `evaluate`, `sweep`, `benchmark` and the demo.
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

    def constants(self) -> dict[str, float]:
        """{constant: value} for every priced field."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata}

    def mac(self, precision: Precision) -> float:
        """One multiply-accumulate: fp32 multiply + fp32 add (4.6 pJ), or int8 multiply + int32 add (0.3 pJ)."""
        fp32 = check_precision(precision) == "fp32"
        return self.fp32_mult + self.fp32_add if fp32 else self.int8_mult + self.int32_add

    def add(self, precision: Precision) -> float:
        """One accumulate (a synaptic event, a membrane update): an fp32 add, or an int32 add for int8 weights."""
        return self.fp32_add if check_precision(precision) == "fp32" else self.int32_add

    def sram(self, array_bytes: float) -> float:
        """pJ per byte read from the smallest SRAM of Horowitz's three (8 KB, 32 KB, 1 MB) that holds `array_bytes`."""
        for size, energy in ((8 << 10, self.sram_8kb), (32 << 10, self.sram_32kb)):
            if array_bytes <= size:
                return energy
        return self.sram_1mb

    def scaled(self, factor: float) -> EnergyTable:
        """Every constant times `factor` (e.g. a process node's rough scaling); the ratio stays."""
        priced = {name: value * factor for name, value in self.constants().items() if name != "write_per_read"}
        return replace(self, name=f"{self.name} x {factor:g}", **priced)

    def to_json(self) -> dict:
        """The table as results record it: its name, constants and each constant's unit and source."""
        return {"name": self.name, "constants": self.constants(), "sources": self.sources()}

    @classmethod
    def from_json(cls, data: Mapping) -> EnergyTable:
        return cls(name=data["name"], **data["constants"])


HOROWITZ_45NM = EnergyTable()


@dataclass
class LayerCost:
    """One synaptic stage and the neurons it feeds, per decision (means over the decisions priced).

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

    def to_json(self) -> dict:
        return {**asdict(self), "energy_pj": self.energy_pj}

    @classmethod
    def from_json(cls, data: Mapping) -> LayerCost:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


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

    def to_json(self) -> dict:
        """The report as results record it: per layer, the total (with its energy) and the settings."""
        return {"network": self.network, "settings": self.settings, "layers": [c.to_json() for c in self.layers],
                "total": self.total.to_json()}

    @classmethod
    def from_json(cls, data: Mapping) -> CostReport:
        return cls(data["network"], [LayerCost.from_json(row) for row in data["layers"]], dict(data["settings"]))

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


@dataclass
class CostComparison:
    """What one decision costs the SNN against the DQN it was converted from, in int8 and in fp32, under
    one table: what `evaluate`, `sweep`, `benchmark` and the demo record (`SnnPlay.cost`) and print.

    The SNN is measured on the decisions it was priced on (in `evaluate`, every state it visited in its
    games); the DQN's cost does not depend on the state. `cheaper` compares with the int8 DQN, what a
    deployed ANN runs in.
    """

    snn: CostReport
    dqn_int8: CostReport
    dqn_fp32: CostReport
    table: EnergyTable

    @property
    def ratio_int8(self) -> float:
        """SNN energy / int8 DQN energy per decision."""
        return self.snn.energy_pj / self.dqn_int8.energy_pj

    @property
    def ratio_fp32(self) -> float:
        """SNN energy / fp32 DQN energy per decision."""
        return self.snn.energy_pj / self.dqn_fp32.energy_pj

    @property
    def cheaper(self) -> bool:
        """Whether the SNN costs less energy per decision than the int8 DQN."""
        return self.ratio_int8 < 1

    def to_json(self) -> dict:
        """Per-layer reports of the three networks, their energies in µJ, the ratios, the verdict and the
        table's name, constants and sources (`from_json` reads back the reports and the table)."""
        return {"snn": self.snn.to_json(), "dqn_int8": self.dqn_int8.to_json(), "dqn_fp32": self.dqn_fp32.to_json(),
                "snn_energy_uj": self.snn.energy_pj / 1e6, "dqn_int8_energy_uj": self.dqn_int8.energy_pj / 1e6,
                "dqn_fp32_energy_uj": self.dqn_fp32.energy_pj / 1e6, "snn_over_dqn_int8": self.ratio_int8,
                "snn_over_dqn_fp32": self.ratio_fp32, "cheaper_than_dqn_int8": self.cheaper,
                "verdict": verdict(self.snn, self.dqn_int8), "table": self.table.to_json()}

    @classmethod
    def from_json(cls, data: Mapping) -> CostComparison:
        return cls(CostReport.from_json(data["snn"]), CostReport.from_json(data["dqn_int8"]),
                   CostReport.from_json(data["dqn_fp32"]), EnergyTable.from_json(data["table"]))
