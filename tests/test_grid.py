"""The benchmark grid without Ray: settings, games merged by weights, resume by cell, --paper."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dqn2snn_plugin.experiments import evaluation as ev
from dqn2snn_plugin.experiments import grid
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.cli import main
from dqn2snn_plugin.errors import ConfigError, ResultsError
from conftest import ATARI_FIXTURES as ATARI_DIR

TINY = RunSettings(episodes=1, calibration_frames=300, max_steps=40, n_envs=1)
QNET = str(ATARI_DIR / "BreakoutNoFrameskip-v4.qnet.pt")
BREAKOUT_ZIP = ATARI_DIR / "dqn-BreakoutNoFrameskip-v4.zip"
TINY_ARGS = ["--episodes", "1", "--max-steps", "40", "--n-envs", "1", "--calibration-frames", "300"]


def test_binary_cells_beyond_24_bits_are_skipped_and_an_empty_grid_refused():
    settings, skipped = grid.grid_settings([500, 8], ["99.99", "99.9"], ["rate", "binary"])
    assert [s.label() for s in settings] == [
        "rate T=8 p=99.9", "rate T=8 p=99.99", "rate T=500 p=99.9", "rate T=500 p=99.99",
        "binary T=8 p=99.9", "binary T=8 p=99.99"]
    assert skipped == ["binary coding at T=500 skipped: it simulates at most T = 24 (binary coding: steps per layer, "
                       "bits per spike code)"]
    with pytest.raises(ConfigError, match="at most 24 bits, got T=500"):
        grid.grid_settings([500], ["99.9"], ["binary"])
    with pytest.raises(ConfigError, match="coding"):
        grid.grid_settings([8], ["99.9"], ["temporal"])


def test_a_zip_and_its_qnet_file_are_one_game():
    checkpoints = [ev.load_checked(s) for s in (QNET, str(BREAKOUT_ZIP), str(ATARI_DIR / "PongNoFrameskip-v4.qnet.pt"))]
    games = grid.unique_games(checkpoints)
    assert [g.name for g in games] == ["Breakout", "Pong"]
    assert games[0].sources == (QNET, str(BREAKOUT_ZIP))


def test_paper_split_names_the_missing_games_by_hub_id():
    breakout = ev.load_checked(QNET)
    seaquest = replace(ev.load_checked(ATARI_DIR / "PongNoFrameskip-v4.qnet.pt"), env_id="SeaquestNoFrameskip-v4")
    ours, missing, others = grid.split_paper_games(grid.unique_games([breakout, seaquest]))
    assert [g.name for g in ours] == ["Breakout"] and [g.name for g in others] == ["Seaquest"]
    assert len(missing) == 16 and "Breakout" not in missing and "VideoPinball" in missing
    assert grid.hub_id("Pong") == "hf://sb3/dqn-PongNoFrameskip-v4"


@pytest.mark.slow
def test_a_larger_grid_computes_only_its_new_cells(tmp_path):
    games = grid.unique_games([ev.load_checked(QNET)])
    computed = []

    def counting(cells, settings):
        computed.extend(cell.setting for cell in cells)
        yield from grid.run_here(cells, settings)

    first = [grid.Setting("rate", 2, 99.9)]
    grid.Grid(games, first, TINY, tmp_path).run(counting)
    both = [*first, grid.Setting("binary", 2, 99.9)]
    rows = grid.Grid(games, both, TINY, tmp_path).run(counting)
    assert computed == both  # the first cell once, then only the new one
    assert [row[1:3] for row in rows] == [["rate", 2], ["binary", 2]]
    records = [json.loads(line) for line in (tmp_path / "cells.jsonl").read_text().splitlines()]
    assert [(r["coding"], r["T"]) for r in records] == [("rate", 2), ("binary", 2)]
    assert all(r["wall_s"] > 0 and r["host"] and r["ray_node_id"] is None for r in records)
    with pytest.raises(ResultsError, match="incompatible run.*episodes"):
        grid.Grid(games, both, RunSettings(episodes=2, calibration_frames=300, max_steps=40, n_envs=1), tmp_path)


@pytest.mark.slow
def test_paper_runs_its_two_settings_and_lists_the_rest(capsys, tmp_path):
    argv = ["benchmark", "--paper", QNET, *TINY_ARGS, "--max-steps", "8", "-o", str(tmp_path)]  # T = 500 is slow
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "16 of the paper's games have no checkpoint here" in out and "hf://sb3/dqn-PongNoFrameskip-v4" in out
    md = (tmp_path / "benchmark.md").read_text().splitlines()
    assert md[2].startswith("| Breakout | rate | 500 | 99.9 | per layer |")
    assert md[3].startswith("| Breakout | binary | 8 | 99.99 | per channel |") and len(md) == 4
    assert json.loads((tmp_path / "config.json").read_text())["episodes"] == 1  # --episodes overrides the 30


@pytest.mark.parametrize("argv, message", [
    (["--paper", "--T", "64"], "--paper fixes the settings"),
    (["--cpus-per-cell", "2"], "add --ray"),
    (["--ray", "--device", "cuda"], "--device cuda and --gpus-per-cell > 0 go together"),
    (["--ray", "--gpus-per-cell", "1"], "--device cuda and --gpus-per-cell > 0 go together"),
])
def test_inconsistent_benchmark_options_are_refused(argv, message, capsys, tmp_path):
    assert main(["benchmark", QNET, *argv, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dqn2snn: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "cells.jsonl").exists()


# ---------------------------------------------------------------- the grid's numbers, from fakes with distinct values


def test_a_cell_is_measured_at_its_own_setting_not_the_run_settings(monkeypatch):
    from distinct_records import EVALUATION

    asked = {}

    def fake_evaluate(checkpoint, T, percentile, settings, env_factory=None):
        asked.update(T=T, percentile=percentile, coding=settings.coding, channel_wise=settings.channel_wise)
        return EVALUATION

    monkeypatch.setattr(grid, "evaluate", fake_evaluate)
    run = RunSettings(coding="rate", channel_wise=False)
    cell = grid.measure_cell(None, grid.Setting("binary", 6, 99.99, True), run)
    assert asked == {"T": 6, "percentile": 99.99, "coding": "binary", "channel_wise": True}
    assert (cell.coding, cell.channel_wise, cell.evaluation, cell.ray_node_id) == ("binary", True, EVALUATION, None)
    assert cell.wall_s >= 0


def test_the_benchmark_files_show_each_field_under_its_own_header(tmp_path):
    from distinct_records import BENCHMARK_CELL, BENCHMARK_ROW, csv_cells, markdown_cells

    game = grid.Game(None, BENCHMARK_CELL.evaluation.header.checkpoint_sha, ("Breakout.qnet.pt",))
    table = grid.Grid([game], [grid.Setting("rate", 16, 99.9, True)], RunSettings(episodes=2), tmp_path)
    table.run(lambda cells, settings: iter([BENCHMARK_CELL.to_json()]))
    assert csv_cells((tmp_path / "benchmark.csv").read_text()) == [BENCHMARK_ROW]
    assert markdown_cells((tmp_path / "benchmark.md").read_text()) == [BENCHMARK_ROW]
    (scores,) = csv_cells((tmp_path / "scores.csv").read_text())
    # t(0.975, 1) = 12.706: DQN 10, 14 -> se 2; SNN 2, 8 -> se 3
    assert (scores["DQN score (mean ± 95% CI)"], scores["SNN score (mean ± 95% CI)"]) == (
        "12.00 ± 25.41 (n=2)", "5.00 ± 38.12 (n=2)")
    assert (scores["agreement SNN-visited (N+V)"], scores["agreement DQN-visited (N+V)"]) == ("81.1%", "43.3%")
    (record,) = json.loads((tmp_path / "scores.json").read_text())["cells"]
    assert (record["dqn"]["estimate"], record["snn"]["estimate"], record["episodes"]) == (12.0, 5.0, [2, 2])


def test_a_binary_cell_at_exactly_its_most_bits_is_kept():
    settings, skipped = grid.grid_settings([24, 25], ["99.9"], ["binary"])
    assert [s.T for s in settings] == [24] and len(skipped) == 1
