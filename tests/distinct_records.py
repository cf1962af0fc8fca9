"""Records with a different number in every field, and the tables read back cell by cell.

A table test built on these catches a swapped column, a row showing another row's number or a
number from the wrong record: every field's value is unique, so it can only show up under its own
header. The expected cells in the tests are written by hand from the numbers here (never by the code
that builds the tables).
"""

from __future__ import annotations

import csv
import io

from dqn2snn_plugin.experiments.records import (
    Agreement, BenchmarkCell, Conversion, CurvePoint, DemoResult, DemoRow, Evaluation, Header, ScoreSummary, SnnPlay,
    StateDraw, SweepCell,
)
from dqn2snn_plugin.experiments.settings import RunSettings


def summary(scores: list[float], lengths: list[int]) -> ScoreSummary:
    """Scores whose mean and (population) std are given by hand in each caller."""
    n = len(scores)
    mean = sum(scores) / n
    return ScoreSummary(mean, (sum((s - mean) ** 2 for s in scores) / n) ** 0.5, scores, lengths, 0)


def agreements(nv: float, spikes: float, n_nv: int, n_spikes: int) -> dict[str, Agreement]:
    return {"spikes+membrane": Agreement(nv, nv - 0.01, 0.5, n_nv), "spikes": Agreement(spikes, None, None, n_spikes)}


DQN_SCORE = summary([10.0, 14.0], [200, 210])  # 12.0 ± 2.0
SNN_SCORE = summary([2.0, 8.0], [150, 160])  # 5.0 ± 3.0
SNN_VISITED = agreements(0.811, 0.622, 301, 302)
DQN_VISITED = agreements(0.433, 0.254, 401, 402)
HELDOUT = agreements(0.955, 0.166, 64, 65)
SNN_PLAY = SnnPlay(SNN_SCORE, SNN_VISITED, spikes_per_decision=1111.0, synaptic_ops_per_decision=77777.0)
HEADER = Header("Breakout.qnet.pt", "0123abcd", "BreakoutNoFrameskip-v4", RunSettings(episodes=2).as_config())
DRAW = StateDraw(300, 1000, 2, 0.05, True)
EVALUATION = Evaluation(HEADER, 16, 99.9, DQN_SCORE, SNN_PLAY, DQN_VISITED, {"percentile": 99.9}, DRAW)
BENCHMARK_CELL = BenchmarkCell("rate", True, EVALUATION, "here", None, 42.0)
SWEEP_CELL = SweepCell(99.9, 16, SNN_PLAY, HELDOUT)
# BENCHMARK_CELL's row of benchmark.md / .csv, by hand
BENCHMARK_ROW = {"game": "Breakout", "coding": "rate", "T": "16", "p": "99.9", "scales": "per channel",
                 "DQN score": "12.0 ± 2.0", "SNN score": "5.0 ± 3.0",
                 "agreement SNN-visited (N+V)": "81.1%", "agreement DQN-visited (N+V)": "43.3%",
                 "agreement SNN-visited (spikes)": "62.2%", "agreement DQN-visited (spikes)": "25.4%",
                 "spikes per decision": "1,111", "synaptic ops per decision": "77,777",
                 # a record without a cost model (older results): energy columns say so
                 "energy per decision (µJ)": "n/a", "÷ int8 DQN": "n/a", "cheaper than int8 DQN": "n/a",
                 "DQN energy per decision (µJ)": "n/a", "cell wall (s)": "42"}


def demo_result() -> DemoResult:
    """Two conversions with different scores, agreements, costs and latencies, and a DQN unlike both."""
    paper = Conversion("paper", "rate", 32, 99.9, False, (8, 32))
    ours = Conversion("ours", "binary", 8, 99.99, True, (4, 8))
    rows = [
        DemoRow(paper, 32, [CurvePoint(8, 8, 0.501), CurvePoint(32, 32, 0.702)],
                SnnPlay(summary([1.0, 3.0], [90, 91]), agreements(0.311, 0.212, 70, 71), 555.0, 33333.0), {}),
        DemoRow(ours, 40, [CurvePoint(4, 20, 0.603), CurvePoint(8, 40, 0.904)],
                SnnPlay(summary([20.0, 30.0], [95, 96]), agreements(0.877, 0.788, 80, 81), 666.0, 44444.0), {}),
    ]
    return DemoResult(HEADER, DQN_SCORE, 64, rows, DRAW, DRAW)


def markdown_cells(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `text`, each as {header: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return [dict(zip(split[0], row, strict=True)) for row in split[2:]]


def csv_cells(text: str) -> list[dict[str, str]]:
    """The rows of a CSV file, each as {header: cell}."""
    return list(csv.DictReader(io.StringIO(text)))
