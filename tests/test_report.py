"""The tables: percentages, scores and percentiles shown one way, the rows built from typed records."""

from __future__ import annotations

import json

import pytest

from dqn2snn_plugin.experiments.confidence import Interval
from dqn2snn_plugin.experiments.records import BenchmarkCell, ScoreSummary, SweepCell
from dqn2snn_plugin.experiments.report import (
    BENCHMARK_HEADERS, SCORE_HEADERS, SWEEP_HEADERS, benchmark_row, benchmark_table, format_evaluation, interval,
    mean_ci, microjoules, p_label, pct, score, score_record, score_row, scores_table, sweep_rows,
)
from test_records import COST, OLD_BENCHMARK_CELL, OLD_SWEEP_CELL, SCORE


def test_numbers_are_shown_one_way():
    assert (pct(0.1234), pct(1.0), pct(None)) == ("12.3%", "100.0%", "n/a")
    assert score(ScoreSummary.from_json(SCORE)) == "2.5 ± 0.5"
    assert (p_label(100.0), p_label(99.9), p_label(99.0)) == ("max", "99.9", "99")


def test_a_benchmark_row_shows_the_cell():
    row = benchmark_row(BenchmarkCell.from_json(OLD_BENCHMARK_CELL))
    assert len(row) == len(BENCHMARK_HEADERS)
    assert row == ["Breakout", "rate", 4, "99.9", "per layer", "2.5 ± 0.5", "2.5 ± 0.5", "90.0%", "90.0%", "70.0%",
                   "70.0%", "1,234", "98,765", "n/a", "n/a", "n/a", "n/a", "12"]  # written before costs were recorded
    assert benchmark_table([row]).splitlines()[2] == "| " + " | ".join(map(str, row)) + " |"
    priced = benchmark_row(BenchmarkCell.from_json({**OLD_BENCHMARK_CELL, "snn": {**OLD_BENCHMARK_CELL["snn"],
                                                                                   "cost": COST}}))
    assert priced[-5:] == ["2.5", "2", "no", "int8 1.25, fp32 5", "12"]  # 2.5 µJ, twice the int8 DQN's 1.25 µJ


def test_sweep_rows_are_ordered_by_percentile_then_T():
    cells = [SweepCell.from_json({**OLD_SWEEP_CELL, "percentile": p, "T": T}) for p, T in
             ((100.0, 2), (99.9, 8), (99.9, 2))]
    rows = sweep_rows(ScoreSummary.from_json(SCORE), cells)
    assert [row[:2] for row in rows] == [["99.9", 2], ["99.9", 8], ["max", 2]]
    assert rows[0] == ["99.9", 2, "2.50", "2.50", "0.50", "0.9000", "0.7000", "0.9000", "0.7000", "1234", "n/a", "n/a",
                       "n/a", "n/a"]
    assert len(rows[0]) == len(SWEEP_HEADERS)




def _cell_with_scores(dqn: list[float], snn: list[float]) -> BenchmarkCell:
    def summary(scores):
        return {**SCORE, "scores": scores, "lengths": [100] * len(scores)}

    line = {**OLD_BENCHMARK_CELL, "dqn": {"score": summary(dqn)}, "snn": {**OLD_BENCHMARK_CELL["snn"],
                                                                            "score": summary(snn)}}
    return BenchmarkCell.from_json(line)


def test_the_score_comparison_has_95_percent_intervals_by_hand():
    # DQN 1..5: mean 3, se sqrt(0.5), t(0.975, 4) = 2.776 -> ± 1.96; SNN 0,0,0,4: mean 1, se 1,
    # t(0.975, 3) = 3.18 -> ± 3.18; SNN - DQN = -2 ± 2.4802 * sqrt(1.5) (Welch, df 5.68) = [-5.04, 1.04]
    cell = _cell_with_scores([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 4.0])
    row = score_row(cell)
    assert len(row) == len(SCORE_HEADERS)
    assert row == ["Breakout", "rate T=4 p=99.9", "3.00 ± 1.96 (n=5)", "1.00 ± 3.18 (n=4)", "[-5.04, 1.04]", "yes",
                   "90.0%", "90.0%", "98,765"]
    record = score_record(cell)
    assert record["episodes"] == [5, 4] and record["same_score"] is True
    assert record["snn_minus_dqn"]["estimate"] == -2.0 and record["snn_minus_dqn"]["df"] == pytest.approx(5.684, 1e-3)
    assert (record["dqn"]["low"], record["dqn"]["high"]) == pytest.approx((3 - 1.9632, 3 + 1.9632), abs=1e-3)
    # variance 0.25 * 100/99 each side: se = sqrt(2 * 0.2525 / 100) = 0.0711, df 198, t = 1.972 -> ± 0.140
    far = score_row(_cell_with_scores([10.0, 11.0] * 50, [5.0, 6.0] * 50))
    assert far[4:6] == ["[-5.14, -4.86]", "no"]
    assert scores_table([cell]).splitlines()[-1].startswith("Student t, 95%")


def test_a_single_game_has_no_interval():
    row = score_row(_cell_with_scores([3.0], [2.0]))
    assert row[2:6] == ["3.00 ± n/a (n=1)", "2.00 ± n/a (n=1)", "n/a", "no"]
    assert (mean_ci(ScoreSummary.from_json(SCORE)), interval(Interval(1.0, 0.5, 1.5, 3))) == (
        "2.50 ± 6.35 (n=2)", "[0.50, 1.50]")


def test_a_benchmark_folder_holds_the_score_comparison(tmp_path):
    from dqn2snn_plugin.experiments import grid
    from dqn2snn_plugin.experiments.evaluation import load_checked
    from dqn2snn_plugin.experiments.settings import RunSettings
    from conftest import ATARI_FIXTURES

    games = grid.unique_games([load_checked(ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt")])
    cell = _cell_with_scores([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 4.0]).to_json()

    def logged(cells, settings):  # the cell as measured earlier, no game played
        yield {**cell, "checkpoint_sha": games[0].digest}

    table = grid.Grid(games, [grid.Setting("rate", 4, 99.9)], RunSettings(episodes=5), tmp_path)
    table.run(logged)
    assert (tmp_path / "scores.md").read_text().splitlines()[2] == "| " + " | ".join(
        map(str, score_row(BenchmarkCell.from_json(cell)))) + " |"
    assert (tmp_path / "scores.csv").read_text().splitlines()[0].startswith("game,setting,DQN score (mean ± 95% CI)")
    written = json.loads((tmp_path / "scores.json").read_text())
    assert written["method"].startswith("Student t") and written["cells"][0]["snn_minus_dqn"]["estimate"] == -2.0


def test_energy_is_shown_in_microjoules_with_three_digits():
    assert [microjoules(pj) for pj in (1.6857e9, 129.9e6, 23.64e6, 1.694e6, 12_345.0)] == [
        "1,686", "130", "23.6", "1.69", "0.0123"]


def test_the_evaluate_printout_shows_the_records_energy_and_the_dqns():
    cell = BenchmarkCell.from_json({**OLD_BENCHMARK_CELL, "snn": {**OLD_BENCHMARK_CELL["snn"], "cost": COST}})
    printed = format_evaluation(cell.evaluation)
    lines = printed.splitlines()
    head = [c.strip() for c in lines[1].split("|")]
    dqn, snn = ([c.strip() for c in line.split("|")] for line in lines[3:5])
    energy = head.index("energy per decision (µJ)")
    assert (dqn[energy], snn[energy], snn[energy + 1], snn[energy + 2]) == ("int8 1.25, fp32 5", "2.5", "2", "no")
    assert "SNN ÷ int8 DQN = 2, SNN ÷ fp32 DQN = 0.5: the SNN is not cheaper than the int8 DQN" in printed
    assert "**SNN rate T=4 (fp32)**" in printed  # the per-layer table
    assert "Horowitz 2014, 45 nm" in printed and "weights read per event, mean over 1,234 decisions" in printed
