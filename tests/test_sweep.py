"""sweep: resumable cells on the CellLog, a config that pins the settings and how the states were drawn."""

from __future__ import annotations

import json

import pytest

from dqn2snn_plugin.cli import main
from dqn2snn_plugin.experiments import sweep as sw
from dqn2snn_plugin.experiments.evaluation import calibration_draws
from dqn2snn_plugin.experiments.settings import RunSettings
from conftest import ATARI_FIXTURES, atari_checkpoint

QNET = str(ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt")
SWEEP_ARGS = ["--T", "2,4", "--percentile", "99.9,max", "--episodes", "1", "--max-steps", "40", "--n-envs", "1",
              "--calibration-frames", "300", "--test-frames", "32"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.mark.slow
def test_sweep_resumes_after_a_crash_without_recomputing(tmp_path, monkeypatch, capsys):
    real_run_cell, calls = sw.run_cell, []

    def crashing(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does mid-sweep
        calls.append((args[2], args[3]))
        return real_run_cell(*args, **kwargs)

    monkeypatch.setattr(sw, "run_cell", crashing)
    capsys.readouterr()
    assert main(["sweep", QNET, *SWEEP_ARGS, "-o", str(tmp_path)]) == 130  # Ctrl-C: one line, no traceback
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("dqn2snn: interrupted: nothing is lost") and "Traceback" not in err
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the DQN baseline + 2 finished cells, durably written
    first = list(calls)

    calls.clear()
    monkeypatch.setattr(sw, "run_cell", lambda *a, **k: calls.append((a[2], a[3])) or real_run_cell(*a, **k))
    assert main(["sweep", QNET, *SWEEP_ARGS, "-o", str(tmp_path)]) == 0
    assert len(calls) == 2 and not set(calls) & set(first)
    records = [json.loads(line) for line in (tmp_path / "cells.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "dqn" for r in records) == 1
    assert sorted((r["percentile"], r["T"]) for r in records if r["kind"] == "cell") == [
        (99.9, 2), (99.9, 4), (100.0, 2), (100.0, 4)]
    csv_lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("percentile,T,DQN score")
    assert (tmp_path / "sweep.md").read_text().count("\n") == 6
    for png in ("score_vs_T.png", "agreement_vs_T.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"

    # a rerun on part of the grid computes nothing and keeps every cell in the table
    assert main(["sweep", QNET, *[a if a != "2,4" else "2" for a in SWEEP_ARGS], "-o", str(tmp_path)]) == 0
    assert (tmp_path / "sweep.csv").read_text().splitlines() == csv_lines

    # a third run computes nothing, and a cell logged twice (two runs at once, before the lock) is one row
    with open(tmp_path / "cells.jsonl", "a") as handle:
        handle.write(lines[1] + "\n")
    calls.clear()
    assert main(["sweep", QNET, *SWEEP_ARGS, "-o", str(tmp_path)]) == 0
    assert calls == [] and (tmp_path / "sweep.csv").read_text().splitlines() == csv_lines
    # an incompatible run is refused before any work
    capsys.readouterr()
    assert main(["sweep", QNET, *SWEEP_ARGS, "--seed", "1", "-o", str(tmp_path)]) == 2
    assert "incompatible run" in capsys.readouterr().err




def test_the_config_pins_the_weights_settings_and_state_draws_but_not_the_file():
    settings = RunSettings(seed=5, n_envs=3, calibration_frames=700)
    config = sw.sweep_config(atari_checkpoint(), settings, test_frames=64)
    calibration, heldout = calibration_draws(settings, 64)
    assert "checkpoint" not in config and config["checkpoint_sha"] and config["env_id"] == "BreakoutNoFrameskip-v4"
    assert config["settings"] == settings.as_config() and config["test_frames"] == 64
    assert config["calibration_states"] == calibration.to_json() and config["heldout_states"] == heldout.to_json()
    games = set(range(settings.seed, settings.seed + settings.n_envs))
    for draw in (calibration, heldout):  # no env seed of a state set is one of the games'
        assert not games & set(range(draw.first_seed, draw.first_seed + draw.n_envs))
    assert calibration.first_seed != heldout.first_seed and (calibration.frames, heldout.frames) == (700, 64)
    assert calibration.separate and heldout.separate
    json.dumps(config)  # JSON-ready
