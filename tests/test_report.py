"""The tables: percentages, scores and percentiles shown one way, the rows built from typed records."""

from __future__ import annotations

from dqn2snn_plugin.experiments.records import BenchmarkCell, ScoreSummary, SweepCell
from dqn2snn_plugin.experiments.report import (
    BENCHMARK_HEADERS, SWEEP_HEADERS, benchmark_row, benchmark_table, p_label, pct, score, sweep_rows,
)
from test_records import OLD_BENCHMARK_CELL, OLD_SWEEP_CELL, SCORE


def test_numbers_are_shown_one_way():
    assert (pct(0.1234), pct(1.0), pct(None)) == ("12.3%", "100.0%", "n/a")
    assert score(ScoreSummary.from_json(SCORE)) == "2.5 ± 0.5"
    assert (p_label(100.0), p_label(99.9), p_label(99.0)) == ("max", "99.9", "99")


def test_a_benchmark_row_shows_the_cell():
    row = benchmark_row(BenchmarkCell.from_json(OLD_BENCHMARK_CELL))
    assert len(row) == len(BENCHMARK_HEADERS)
    assert row == ["Breakout", "rate", 4, "99.9", "per layer", "2.5 ± 0.5", "2.5 ± 0.5", "90.0%", "90.0%", "70.0%",
                   "70.0%", "1,234", "98,765", "12"]
    assert benchmark_table([row]).splitlines()[2] == "| " + " | ".join(map(str, row)) + " |"


def test_sweep_rows_are_ordered_by_percentile_then_T():
    cells = [SweepCell.from_json({**OLD_SWEEP_CELL, "percentile": p, "T": T}) for p, T in
             ((100.0, 2), (99.9, 8), (99.9, 2))]
    rows = sweep_rows(ScoreSummary.from_json(SCORE), cells)
    assert [row[:2] for row in rows] == [["99.9", 2], ["99.9", 8], ["max", 2]]
    assert rows[0] == ["99.9", 2, "2.50", "2.50", "0.50", "0.9000", "0.7000", "0.9000", "0.7000", "1234"]
    assert len(rows[0]) == len(SWEEP_HEADERS)


