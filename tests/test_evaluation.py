"""evaluate / sweep (with resume) / convert-reload on the Breakout fixture with tiny settings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin.experiments import evaluation as ev
from dqn2snn_plugin.experiments import sweep as sw
from dqn2snn_plugin.envs.atari import play
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.cli import main
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.errors import ResultsError
from dqn2snn_plugin.io.results import CellLog, writable_dir, write_json
from dqn2snn_plugin.io.store import load_snn, save_snn
from conftest import ATARI_FIXTURES, atari_checkpoint

TINY = ev.RunSettings(episodes=2, calibration_frames=300, max_steps=60, n_envs=2)
QNET = str(ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt")
SWEEP_ARGS = ["--T", "2,4", "--percentile", "99.9,max", "--episodes", "1", "--max-steps", "40", "--n-envs", "1",
              "--calibration-frames", "300", "--test-frames", "32"]


def constant_breakout_dqn() -> DQNCheckpoint:
    """A Breakout "DQN" whose hidden units are 2 (three of them) and then 1 (two) whatever the frame,
    and whose Q-values are (1.8, 0.6, 1.2, 2.4): it always moves LEFT (action 3; with ε = 0.05 that
    scores a brick or two in 200 steps, where FIRE, its worst action, loses every ball). Converted
    with the maxima as scales (2, then 1) every hidden neuron gets a current of exactly 1 per step, so
    it fires at every step and the SNN's readouts are the Q-values exactly: the SNN is this DQN, and
    must play and score like it."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4 * 84 * 84, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 4))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.fill_(2.0)
        net[3].weight.zero_()
        net[3].bias.fill_(1.0)
        net[5].weight.copy_(torch.tensor([0.9, 0.3, 0.6, 1.2]).view(4, 1).expand(4, 2))
        net[5].bias.zero_()
    return DQNCheckpoint(net.eval(), 4, (4, 84, 84), "CnnPolicy", "DQN", None, "BreakoutNoFrameskip-v4", "<test>")


@pytest.mark.atari
def test_an_snn_equal_to_its_dqn_plays_and_scores_like_it(atari_observations):
    checkpoint = constant_breakout_dqn()
    snn = convert(checkpoint, atari_observations, percentile="max", T=5)
    torch.testing.assert_close(snn(atari_observations, 5), checkpoint.q_values(atari_observations), rtol=0, atol=1e-6)
    settings = ev.RunSettings(episodes=2, max_steps=200, n_envs=2)
    dqn_score, _ = ev.play_dqn(checkpoint, settings)
    result = ev.play_snn(checkpoint, snn, 5, settings)
    assert result["score"] == dqn_score  # the same actions on the same seeds: the same games
    assert dqn_score["mean"] > 0  # games in which playing another action shows
    for readout in ev.AGREEMENT_READOUTS:
        assert result["agreement_snn_visited"][readout]["rate"] == 1.0
        assert result["agreement_snn_visited"][readout]["n_states"] == sum(dqn_score["lengths"])
    assert result["spikes_per_decision"] == (3 + 2) * 5  # every neuron fires at each of 5 steps
    # a spike of layer 1 reaches the 2 neurons of layer 2, one of layer 2 the 4 outputs
    assert result["synaptic_ops_per_decision"] == 3 * 5 * 2 + 2 * 5 * 4


def reference_games(policy, checkpoint, snn, T, settings):
    """Games played step by step here: the score of `policy`, and on every visited state whether the
    SNN's greedy action (on the settings' readout, and on the spike count) equals the DQN's."""
    matches = {readout: [] for readout in ev.AGREEMENT_READOUTS}

    def record(obs, greedy, taken):
        dqn_actions = checkpoint.act(obs)
        readouts = snn.readouts(obs, T)
        for readout in matches:
            matches[readout] += (readouts[readout].argmax(1) == dqn_actions).tolist()

    episodes = play(policy, checkpoint.env_id, settings.episodes, n_envs=settings.n_envs, epsilon=settings.epsilon,
                    seed=settings.seed, max_steps=settings.max_steps, on_step=record)
    return [e.score for e in episodes], [e.length for e in episodes], matches


@pytest.mark.atari
def test_evaluate_reports_the_games_each_player_played(tmp_path, atari_observations):
    """Breakout's fixture DQN at T = 4 (agreement well below 100%): evaluate's scores and both
    agreements equal those of games played here with the SNN's greedy action on its readout."""
    checkpoint = atari_checkpoint()
    snn = convert(checkpoint, atari_observations, percentile=99.9, T=4)
    result = json.loads(json.dumps(ev.evaluate(checkpoint, T=4, percentile=99.9, settings=TINY, snn=snn)))

    def snn_policy(obs):
        return snn.readouts(obs, 4)[TINY.readout].argmax(1)

    for who, policy, score, agreement in (
            ("DQN", checkpoint.act, result["dqn"]["score"], result["agreement_dqn_visited"]),
            ("SNN", snn_policy, result["snn"]["score"], result["snn"]["agreement_snn_visited"])):
        scores, lengths, matches = reference_games(policy, checkpoint, snn, 4, TINY)
        assert (score["scores"], score["lengths"]) == (scores, lengths), who
        assert (score["mean"], score["std"]) == pytest.approx((np.mean(scores), np.std(scores))), who
        for readout, match in matches.items():
            assert agreement[readout]["n_states"] == len(match), (who, readout)
            assert agreement[readout]["rate"] == pytest.approx(np.mean(match), abs=1e-12), (who, readout)
    assert 0.0 < result["snn"]["agreement_snn_visited"]["spikes"]["rate"] < 1.0  # a case where errors show
    table = ev.format_evaluation(result)
    assert "DQN plays" in table and "SNN plays" in table


def test_heldout_agreement_of_each_T_equals_a_separate_run_at_that_T(mlp_checkpoint):
    """One simulation of max(T) steps serves every T; each must equal its own T-step run, per readout."""
    snn = convert(mlp_checkpoint, torch.randn(200, 6), T=16)
    states = torch.randn(90, 6).numpy()
    summaries = ev.heldout_agreement(mlp_checkpoint, snn, states, [2, 5, 16], batch_size=40)
    q = mlp_checkpoint.q_values(states)
    for T, summary in summaries.items():
        readouts = snn.readouts(states, T)
        for readout in ev.AGREEMENT_READOUTS:
            expected = (readouts[readout].argmax(1) == q.argmax(1)).double().mean()
            assert summary[readout]["rate"] == pytest.approx(float(expected), abs=1e-12), (T, readout)
            assert summary[readout]["n_states"] == 90
    rates = [summaries[T][r]["rate"] for T in (2, 16) for r in ev.AGREEMENT_READOUTS]
    assert len(set(rates)) > 1  # the readouts and T differ here, so a mix-up would show


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
