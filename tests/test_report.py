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


@pytest.mark.parametrize("reads, said", [("per_decision", "weights read once per decision, mean"),
                                          ("least", "weights read per event or once per decision, whichever is less")])
def test_the_printout_says_how_the_weights_were_read(reads, said):
    cost = {**COST, "snn": {**COST["snn"], "settings": {**COST["snn"]["settings"], "weight_reads": reads}}}
    cell = BenchmarkCell.from_json({**OLD_BENCHMARK_CELL, "snn": {**OLD_BENCHMARK_CELL["snn"], "cost": cost}})
    assert said in format_evaluation(cell.evaluation)


# ---------------------------------------------------------------- every column against its own field
# (tests/distinct_records.py: a different number in every field, so a swapped column or a number of
# the wrong record or row shows; the expected cells are written by hand from those numbers)


def _interval_midpoint(cell: str) -> float:
    low, high = (float(x) for x in cell.strip("[]").split(","))
    return (low + high) / 2


def test_every_benchmark_column_shows_its_own_field(tmp_path):
    from dqn2snn_plugin.io.results import write_table
    from distinct_records import BENCHMARK_CELL, BENCHMARK_ROW as expected, csv_cells, markdown_cells

    assert markdown_cells(benchmark_table([benchmark_row(BENCHMARK_CELL)])) == [expected]
    write_table(tmp_path, "benchmark", BENCHMARK_HEADERS, [benchmark_row(BENCHMARK_CELL)])
    assert csv_cells((tmp_path / "benchmark.csv").read_text()) == [expected]
    assert markdown_cells((tmp_path / "benchmark.md").read_text()) == [expected]


def test_every_score_comparison_column_shows_its_own_field():
    from distinct_records import BENCHMARK_CELL, markdown_cells

    # t(0.975, 1) = 12.706: DQN 10, 14 -> se 2, ± 25.41; SNN 2, 8 -> se 3, ± 38.12; difference 5 - 12 = -7
    (row,) = markdown_cells(scores_table([BENCHMARK_CELL]))
    assert row["game"] == "Breakout" and row["setting"] == "rate T=16 p=99.9 per channel"
    assert row["DQN score (mean ± 95% CI)"] == "12.00 ± 25.41 (n=2)"
    assert row["SNN score (mean ± 95% CI)"] == "5.00 ± 38.12 (n=2)"
    assert _interval_midpoint(row["SNN − DQN (95% CI)"]) == pytest.approx(-7.0, abs=0.01)
    assert (row["agreement SNN-visited (N+V)"], row["agreement DQN-visited (N+V)"]) == ("81.1%", "43.3%")
    assert row["synaptic ops per decision"] == "77,777"
    record = score_record(BENCHMARK_CELL)
    assert (record["dqn"]["estimate"], record["snn"]["estimate"], record["snn_minus_dqn"]["estimate"]) == (
        12.0, 5.0, -7.0)


def test_each_row_of_evaluates_table_shows_its_own_player():
    from dqn2snn_plugin.experiments.report import format_evaluation
    from distinct_records import EVALUATION, markdown_cells

    text = format_evaluation(EVALUATION)
    dqn, snn = markdown_cells(text)
    assert dqn == {"": "DQN plays", "score (mean ± std)": "12.0 ± 2.0", "agreement spikes+membrane": "43.3%",
                   "agreement spikes": "25.4%", "states": "401",
                   "energy per decision (µJ)": "n/a", "÷ int8 DQN": "", "cheaper than int8 DQN": ""}
    assert snn == {"": "SNN plays", "score (mean ± std)": "5.0 ± 3.0", "agreement spikes+membrane": "81.1%",
                   "agreement spikes": "62.2%", "states": "301",
                   "energy per decision (µJ)": "n/a", "÷ int8 DQN": "n/a", "cheaper than int8 DQN": "n/a"}
    assert text.splitlines()[0].startswith("BreakoutNoFrameskip-v4  T=16  p=99.9  2 episodes")
    assert text.splitlines()[-1] == "spikes per decision: 1,111   synaptic ops per decision: 77,777"


def test_every_sweep_column_shows_its_own_field():
    from distinct_records import DQN_SCORE, SWEEP_CELL

    (row,) = sweep_rows(DQN_SCORE, [SWEEP_CELL])
    assert dict(zip(SWEEP_HEADERS, row, strict=True)) == {
        "percentile": "99.9", "T": 16, "DQN score": "12.00", "SNN score": "5.00", "SNN std": "3.00",
        "agreement SNN-visited (N+V)": "0.8110", "agreement SNN-visited (spikes)": "0.6220",
        "agreement held-out (N+V)": "0.9550", "agreement held-out (spikes)": "0.1660", "spikes per decision": "1111",
        "energy per decision (µJ)": "n/a", "÷ int8 DQN": "n/a", "cheaper than int8 DQN": "n/a", "DQN energy per decision (µJ)": "n/a"}


def test_each_demo_row_shows_its_own_conversion():
    from dqn2snn_plugin.experiments.report import demo_scores_table, demo_table
    from distinct_records import demo_result, markdown_cells

    dqn, paper, ours = markdown_cells(demo_table(demo_result()))
    assert dqn == {"": "DQN (the network converted)", "held-out agreement": "", "agreement while playing": "",
                   "score (mean ± std)": "12.0 ± 2.0", "synaptic ops per decision": "", "latency (time steps)": "",
                   "energy per decision (µJ)": "n/a", "÷ int8 DQN": "", "cheaper than int8 DQN": ""}
    assert paper == {"": "paper", "held-out agreement": "70.2%", "agreement while playing": "31.1%",
                     "score (mean ± std)": "2.0 ± 1.0", "synaptic ops per decision": "33,333",
                     "latency (time steps)": "32", "energy per decision (µJ)": "n/a", "÷ int8 DQN": "n/a", "cheaper than int8 DQN": "n/a"}
    assert ours == {"": "ours", "held-out agreement": "90.4%", "agreement while playing": "87.7%",
                    "score (mean ± std)": "25.0 ± 5.0", "synaptic ops per decision": "44,444",
                    "latency (time steps)": "40", "energy per decision (µJ)": "n/a", "÷ int8 DQN": "n/a", "cheaper than int8 DQN": "n/a"}
    # t(0.975, 1) = 12.706: paper 1, 3 -> se 1; ours 20, 30 -> se 5; DQN 10, 14 -> se 2
    dqn, paper, ours = markdown_cells(demo_scores_table(demo_result()))
    assert dqn["score (mean ± 95% CI)"] == "12.00 ± 25.41 (n=2)"
    assert (paper["score (mean ± 95% CI)"], ours["score (mean ± 95% CI)"]) == ("2.00 ± 12.71 (n=2)",
                                                                             "25.00 ± 63.53 (n=2)")
    assert _interval_midpoint(paper["SNN − DQN (95% CI)"]) == pytest.approx(-10.0, abs=0.01)
    assert _interval_midpoint(ours["SNN − DQN (95% CI)"]) == pytest.approx(13.0, abs=0.01)
    assert (paper["agreement while playing"], ours["agreement while playing"]) == ("31.1%", "87.7%")
    assert (paper["synaptic ops per decision"], paper["latency (time steps)"], ours["latency (time steps)"]) == (
        "33,333", "32", "40")
