"""evaluate / sweep (with resume) / convert-reload on the Breakout fixture with tiny settings."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dqn2snn_plugin import evaluation as ev
from dqn2snn_plugin import sweep as sw
from dqn2snn_plugin.cli import main
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.errors import ResultsError
from dqn2snn_plugin.results import CellLog, writable_dir, write_json
from dqn2snn_plugin.store import load_snn, save_snn
from _fixtures import ATARI_FIXTURES, atari_checkpoint

TINY = ev.RunSettings(episodes=2, calibration_frames=300, max_steps=60, n_envs=2)
QNET = str(ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt")
SWEEP_ARGS = ["--T", "2,4", "--percentile", "99.9,max", "--episodes", "1", "--max-steps", "40", "--n-envs", "1",
              "--calibration-frames", "300", "--test-frames", "32"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")


def test_evaluate_result_is_sane(tmp_path):
    result = ev.evaluate(atari_checkpoint(), T=4, percentile=99.9, settings=TINY)
    write_json(tmp_path / "r.json", result)
    loaded = json.loads((tmp_path / "r.json").read_text())
    for score in (loaded["dqn"]["score"], loaded["snn"]["score"]):
        assert math.isfinite(score["mean"]) and score["std"] >= 0 and len(score["scores"]) == 2
        assert all(length <= 60 for length in score["lengths"])
    for agreement in (loaded["agreement_dqn_visited"], loaded["snn"]["agreement_snn_visited"]):
        assert set(agreement) == {"spikes", "spikes+membrane"}
        for value in agreement.values():
            assert 0.0 <= value["rate"] <= 1.0 and value["n_states"] > 0
    assert loaded["snn"]["spikes_per_decision"] > 0
    table = ev.format_evaluation(loaded)
    assert "DQN plays" in table and "SNN plays" in table


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

    # a third run computes nothing; an incompatible one is refused before any work
    calls.clear()
    assert main(["sweep", QNET, *SWEEP_ARGS, "-o", str(tmp_path)]) == 0
    assert calls == []
    capsys.readouterr()
    assert main(["sweep", QNET, *SWEEP_ARGS, "--seed", "1", "-o", str(tmp_path)]) == 2
    assert "incompatible run" in capsys.readouterr().err


def test_cell_log_drops_a_line_cut_short_by_a_crash(tmp_path):
    log = CellLog(tmp_path, {"format": "x"})
    log.append({"kind": "dqn", "score": {"mean": 1.0}})
    with open(tmp_path / "cells.jsonl", "a") as handle:
        handle.write('{"kind": "cell", "perc')
    reopened = CellLog(tmp_path, {"format": "x"})
    assert len(reopened.records) == 1
    reopened.append({"kind": "cell", "percentile": 99.0, "T": 8})
    assert len(CellLog(tmp_path, {"format": "x"}).records) == 2
    with pytest.raises(ResultsError, match="incompatible"):
        CellLog(tmp_path, {"format": "y"})


def test_convert_then_reload_gives_identical_outputs(tmp_path, atari_observations):
    checkpoint = atari_checkpoint()
    snn = convert(checkpoint, ev.calibration_states(checkpoint, TINY), percentile=99.0, T=16, initial_membrane="half")
    save_snn(snn, checkpoint, tmp_path / "snn.pt")
    reloaded, dqn = load_snn(tmp_path / "snn.pt")
    for name, values in snn.readouts(atari_observations, T=16).items():
        assert torch.equal(values, reloaded.readouts(atari_observations, T=16)[name])
    assert torch.equal(dqn.q_values(atari_observations), checkpoint.q_values(atari_observations))
    assert (reloaded.T, reloaded.initial_membrane, dqn.env_id) == (16, 0.5, checkpoint.env_id)


def test_writable_dir_refuses_a_path_below_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ResultsError, match="cannot write"):
        writable_dir(tmp_path / "file" / "out")


def test_settings_added_later_are_recorded_only_when_not_default():
    """Result directories written before `coding` and `channel_wise` existed stay resumable."""
    assert "coding" not in ev.RunSettings().as_config() and "channel_wise" not in ev.RunSettings().as_config()
    config = ev.RunSettings(coding="binary", channel_wise=True).as_config()
    assert config["coding"] == "binary" and config["channel_wise"] is True
