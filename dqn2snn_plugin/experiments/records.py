"""Typed result records: what `evaluate`, `sweep`, `benchmark` and `demo` measure, as dataclasses.

Each record's `to_json()` gives exactly the keys the result files have always held (`result.json`,
`cells.jsonl`), so files written before these classes existed read back with `from_json()`, and a
sweep or benchmark folder resumes. `from_json` raises KeyError naming a missing key and TypeError
naming a key of the wrong type (an edited or damaged file); `CellLog.parse` turns both into one
ResultsError line naming the file.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from dqn2snn_plugin.energy import CostComparison

if TYPE_CHECKING:  # records stay a light module: reading results loads no game or network code
    from dqn2snn_plugin.checkpoint import DQNCheckpoint
    from dqn2snn_plugin.envs.atari import EpisodeResult
    from dqn2snn_plugin.metrics import AgreementResult

AGREEMENT_READOUTS = ("spikes+membrane", "spikes")  # the readouts every agreement is measured on
_NUMBER = (int, float)


def _take(data: Mapping, key: str, *types: type) -> object:
    """`data[key]`, checked to be one of `types` (a bool is not a number): KeyError or TypeError naming it."""
    if not isinstance(data, Mapping):
        raise TypeError("a record is not a JSON object")
    value = data[key]
    if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
        raise TypeError(f"{key!r}")
    return value


def _number_or_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def weights_digest(checkpoint: DQNCheckpoint) -> str:
    """Short hash of the Q-network's weights: identifies a checkpoint wherever its file lies.

    The hash equals the calibration cache's key of the weights alone (the same values as every
    `checkpoint_sha` already in result folders: test_records pins one), so earlier folders resume."""
    digest = hashlib.sha256(b"obs-v1")
    for name, tensor in checkpoint.q_network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(b"[]")
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class ScoreSummary:
    """Raw game scores: mean, std (population), each episode's score and length, how many were cut."""

    mean: float
    std: float
    scores: list[float]
    lengths: list[int]
    truncated: int

    @classmethod
    def of(cls, episodes: Sequence[EpisodeResult]) -> ScoreSummary:
        scores = np.array([e.score for e in episodes], dtype=np.float64)
        return cls(float(scores.mean()), float(scores.std()), scores.tolist(), [e.length for e in episodes],
                   sum(e.truncated for e in episodes))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> ScoreSummary:
        return cls(_take(data, "mean", *_NUMBER), _take(data, "std", *_NUMBER), _take(data, "scores", list),
                   _take(data, "lengths", list), _take(data, "truncated", int))


@dataclass(frozen=True)
class Agreement:
    """Agreement of the SNN's and the DQN's greedy actions on `n_states` states (NaN kept as None)."""

    rate: float
    rate_above_gap: float | None
    spearman: float | None
    n_states: int

    @classmethod
    def of(cls, result: AgreementResult) -> Agreement:
        return cls(result.rate, _number_or_none(result.rate_above_gap), _number_or_none(result.spearman),
                   len(result.dqn_actions))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> Agreement:
        return cls(_take(data, "rate", *_NUMBER), _take(data, "rate_above_gap", *_NUMBER, type(None)),
                   _take(data, "spearman", *_NUMBER, type(None)), _take(data, "n_states", int))


Agreements = dict[str, Agreement]  # per readout (AGREEMENT_READOUTS)


def agreements_of(results: Mapping[str, AgreementResult]) -> Agreements:
    return {name: Agreement.of(r) for name, r in results.items()}


def agreements_to_json(agreements: Agreements) -> dict:
    return {name: a.to_json() for name, a in agreements.items()}


def agreements_from_json(data: Mapping) -> Agreements:
    return {r: Agreement.from_json(_take(data, r, Mapping)) for r in AGREEMENT_READOUTS}


@dataclass(frozen=True)
class StateDraw:
    """How a state set (calibration or held-out) was drawn: the first `frames` states the DQN acted on
    in its own epsilon-greedy play, env i seeded with `first_seed + i`; `separate` says whether these
    episodes share no env seed with the measured games (`evaluation.calibration_draws`)."""

    frames: int
    first_seed: int
    n_envs: int
    epsilon: float
    separate: bool
    source: str = "the DQN's own epsilon-greedy play"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> StateDraw:
        return cls(**{f.name: _take(data, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class SnnPlay:
    """The SNN's games: score, agreement on the states it visits (the paper's conversion rate), cost.

    `cost`: the energy per decision over the states it visited, per layer, against the int8 and fp32 DQN,
    with the table's constants and sources (`energy.CostComparison`, key "cost"; None in records written
    before costs were recorded, which keep their form)."""

    score: ScoreSummary
    agreement_snn_visited: Agreements
    spikes_per_decision: float
    synaptic_ops_per_decision: float
    cost: CostComparison | None = None

    def to_json(self) -> dict:
        record = {"score": self.score.to_json(), "agreement_snn_visited": agreements_to_json(self.agreement_snn_visited),
                  "spikes_per_decision": self.spikes_per_decision,
                  "synaptic_ops_per_decision": self.synaptic_ops_per_decision}
        if self.cost is not None:
            record["cost"] = self.cost.to_json()
        return record

    @classmethod
    def from_json(cls, data: Mapping) -> SnnPlay:
        cost = data.get("cost") if isinstance(data, Mapping) else None
        return cls(ScoreSummary.from_json(_take(data, "score", Mapping)),
                   agreements_from_json(_take(data, "agreement_snn_visited", Mapping)),
                   _take(data, "spikes_per_decision", *_NUMBER), _take(data, "synaptic_ops_per_decision", *_NUMBER),
                   None if cost is None else CostComparison.from_json(_take(data, "cost", Mapping)))


@dataclass(frozen=True)
class Header:
    """Which network, which game, which settings (`RunSettings.as_config`), and the environment
    protocol the game was played with (`envs.protocol`, JSON form; None for a gymnasium task and in
    records written before protocols were recorded)."""

    checkpoint: str
    checkpoint_sha: str
    env_id: str
    settings: dict
    protocol: dict | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        if data["protocol"] is None:
            del data["protocol"]  # such records keep their earlier form
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> Header:
        return cls(_take(data, "checkpoint", str), _take(data, "checkpoint_sha", str), _take(data, "env_id", str),
                   _take(data, "settings", Mapping), data.get("protocol"))


@dataclass(frozen=True)
class Evaluation:
    """One (T, percentile) measured the paper's way: DQN and SNN games, agreement on both state sets."""

    header: Header
    T: int
    percentile: float
    dqn_score: ScoreSummary
    snn: SnnPlay
    agreement_dqn_visited: Agreements
    scales: dict
    calibration_states: StateDraw | None  # None in results written before it was recorded

    def to_json(self) -> dict:
        record = {**self.header.to_json(), "T": self.T, "percentile": self.percentile,
                  "dqn": {"score": self.dqn_score.to_json()}, "snn": self.snn.to_json(),
                  "agreement_dqn_visited": agreements_to_json(self.agreement_dqn_visited), "scales": self.scales}
        if self.calibration_states is not None:
            record["calibration_states"] = self.calibration_states.to_json()
        return record

    @classmethod
    def from_json(cls, data: Mapping) -> Evaluation:
        draw = data.get("calibration_states") if isinstance(data, Mapping) else None
        return cls(Header.from_json(data), _take(data, "T", int), _take(data, "percentile", *_NUMBER),
                   ScoreSummary.from_json(_take(_take(data, "dqn", Mapping), "score", Mapping)),
                   SnnPlay.from_json(_take(data, "snn", Mapping)),
                   agreements_from_json(_take(data, "agreement_dqn_visited", Mapping)), _take(data, "scales", Mapping),
                   None if draw is None else StateDraw.from_json(draw))


@dataclass(frozen=True)
class DqnBaseline:
    """A sweep's DQN games (`kind: dqn` in cells.jsonl)."""

    score: ScoreSummary
    kind = "dqn"

    def to_json(self) -> dict:
        return {"kind": self.kind, "score": self.score.to_json()}

    @classmethod
    def from_json(cls, data: Mapping) -> DqnBaseline:
        return cls(ScoreSummary.from_json(_take(data, "score", Mapping)))


@dataclass(frozen=True)
class SweepCell:
    """One (percentile, T) cell of a sweep: the SNN's games plus agreement on the held-out states."""

    percentile: float
    T: int
    snn: SnnPlay
    agreement_heldout: Agreements
    kind = "cell"

    def key(self) -> dict:
        return {"percentile": self.percentile, "T": self.T}

    def to_json(self) -> dict:
        return {"kind": self.kind, **self.key(), **self.snn.to_json(),
                "agreement_heldout": agreements_to_json(self.agreement_heldout)}

    @classmethod
    def from_json(cls, data: Mapping) -> SweepCell:
        return cls(_take(data, "percentile", *_NUMBER), _take(data, "T", int), SnnPlay.from_json(data),
                   agreements_from_json(_take(data, "agreement_heldout", Mapping)))


@dataclass(frozen=True)
class BenchmarkCell:
    """One game at one setting of a benchmark: its evaluation, where it ran and its wall time."""

    coding: str
    channel_wise: bool
    evaluation: Evaluation
    host: str
    ray_node_id: str | None
    wall_s: float
    kind = "cell"

    def to_json(self) -> dict:
        ev = self.evaluation
        return {"kind": self.kind, "coding": self.coding, "T": ev.T, "percentile": ev.percentile,
                "channel_wise": self.channel_wise, **ev.to_json(), "host": self.host,
                "ray_node_id": self.ray_node_id, "wall_s": self.wall_s}

    @classmethod
    def from_json(cls, data: Mapping) -> BenchmarkCell:
        return cls(_take(data, "coding", str), _take(data, "channel_wise", bool), Evaluation.from_json(data),
                   _take(data, "host", str), _take(data, "ray_node_id", str, type(None)),
                   _take(data, "wall_s", *_NUMBER))


@dataclass(frozen=True)
class Conversion:
    """How the demo converts the DQN for one of its rows, and the T values of its agreement curve."""

    label: str  # plain words for the table and the plot
    coding: str  # "rate" or "binary"
    T: int  # time steps per decision (rate) or bits per code (binary) while playing
    percentile: float
    channel_wise: bool
    curve_T: tuple[int, ...]  # T values of the held-out agreement curve


@dataclass(frozen=True)
class CurvePoint:
    """Held-out agreement (N + V readout) at one T, with its latency in time steps."""

    T: int
    latency_steps: int
    agreement: float


@dataclass(frozen=True)
class DemoRow:
    """One conversion of the demo, measured."""

    conversion: Conversion
    latency_steps: int
    heldout: list[CurvePoint]
    snn: SnnPlay
    scales: dict

    def to_json(self) -> dict:
        return {**asdict(self.conversion), "latency_steps": self.latency_steps,
                "heldout": [asdict(point) for point in self.heldout], "snn": self.snn.to_json(), "scales": self.scales}


@dataclass(frozen=True)
class DemoResult:
    """The demo's result.json: the DQN's games and both conversions, with how their states were drawn."""

    header: Header
    dqn_score: ScoreSummary
    test_frames: int
    conversions: list[DemoRow]
    calibration_states: StateDraw
    heldout_states: StateDraw

    def to_json(self) -> dict:
        return {**self.header.to_json(), "dqn": {"score": self.dqn_score.to_json()}, "test_frames": self.test_frames,
                "conversions": [row.to_json() for row in self.conversions],
                "calibration_states": self.calibration_states.to_json(),
                "heldout_states": self.heldout_states.to_json()}
