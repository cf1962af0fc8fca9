"""The demo: the paper's conversion and binary coding measured side by side, latency from the layer count."""

from __future__ import annotations

import json

import pytest

from dqn2snn_plugin.checkpoint import load_dqn
from dqn2snn_plugin.cli import main
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.experiments import demo
from dqn2snn_plugin.experiments.evaluation import calibration_draws
from dqn2snn_plugin.experiments.settings import RunSettings
from conftest import atari_checkpoint


def test_shipped_checkpoint_is_found():
    assert demo.find_demo_checkpoint().name == "BreakoutNoFrameskip-v4.qnet.pt"
    assert demo.find_minatar_checkpoint().name == "dqn-MinAtar-Breakout-v1.zip"


def test_latency_is_T_for_rate_and_T_per_weighted_layer_for_binary(atari_observations):
    checkpoint = atari_checkpoint()  # Nature CNN: 3 convolutions + 2 linear layers
    rate = convert(checkpoint, atari_observations, T=16)
    binary = convert(checkpoint, atari_observations, T=8, coding="binary")
    assert demo.latency_steps(rate, 16) == 16
    assert demo.latency_steps(binary, 8) == 40 and demo.latency_steps(binary, 4) == 20


def test_the_paper_row_runs_at_the_binary_latency_by_default():
    paper, ours = demo.conversions(8, None, 5)
    assert (paper.coding, paper.T, paper.percentile, paper.channel_wise) == ("rate", 40, 99.9, False)
    assert (ours.coding, ours.T, ours.percentile, ours.channel_wise) == ("binary", 8, 99.99, True)
    assert ours.curve_T == (2, 4, 6, 8) and paper.curve_T == (10, 20, 30, 40)
    assert demo.conversions(5, 32, 3)[0].curve_T == (6, 12, 15, 32)


def test_demo_end_to_end_on_cartpole(fixtures_dir, tmp_path):
    checkpoint = load_dqn(fixtures_dir / "sb3-zoo" / "classic" / "CartPole-v1.zip")  # 3 weighted layers
    settings = RunSettings(episodes=2, calibration_frames=300, max_steps=50, n_envs=2)
    result = demo.run_demo(checkpoint, settings, tmp_path / "out", bits=6, test_frames=64)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"result.json", "demo.md", "agreement_vs_latency.png"} <= files
    written = json.loads((tmp_path / "out" / "result.json").read_text())
    assert written == json.loads(json.dumps(result.to_json()))
    assert (written["calibration_states"], written["heldout_states"]) == tuple(
        draw.to_json() for draw in calibration_draws(settings, 64))  # apart from the games and each other
    paper, ours = result.conversions
    assert paper.latency_steps == ours.latency_steps == 18
    assert [point.latency_steps for point in ours.heldout] == [6, 12, 18]
    for row in (paper, ours):
        assert row.snn.score.mean > 0 and row.snn.synaptic_ops_per_decision > 0
        assert 0.0 <= row.snn.agreement_snn_visited["spikes+membrane"].rate <= 1.0
    assert set(written["conversions"][0]) == {"label", "coding", "T", "percentile", "channel_wise", "curve_T",
                                              "latency_steps", "heldout", "snn", "scales"}  # the keys users have
    scores = (tmp_path / "out" / "scores.md").read_text().splitlines()
    assert scores[2].startswith("| DQN (the network converted) | ") and "(n=2)" in scores[2]
    assert scores[3].count("|") == scores[4].count("|") == 11 and scores[5].startswith("Student t, 95%")
    text = (tmp_path / "out" / "demo.md").read_text()
    assert "paper's method: rate coding" in text and "ours, training-free: binary coding, 6-bit codes" in text
    assert text.count("\n") == 6  # header, rule, DQN, two conversions, what the energies assume
    # each SNN's energy per decision next to the int8 and fp32 DQN's, as the record holds them
    lines = text.splitlines()
    energy = [c.strip() for c in lines[0].split("|")].index("energy per decision (µJ)")
    dqn = written["conversions"][0]["snn"]["cost"]
    assert [c.strip() for c in lines[2].split("|")][energy] == (
        f"int8 {dqn['dqn_int8_energy_uj']:.3g}, fp32 {dqn['dqn_fp32_energy_uj']:.3g}")
    for line, conversion in zip(lines[3:5], written["conversions"]):
        cells = [c.strip() for c in line.split("|")]
        cost = conversion["snn"]["cost"]
        assert float(cells[energy]) == pytest.approx(cost["snn_energy_uj"], rel=5e-3)
        assert cells[energy + 2] == ("yes" if cost["snn_energy_uj"] < cost["dqn_int8_energy_uj"] else "no")
    assert "Horowitz 2014, 45 nm" in lines[5]


@pytest.mark.slow
def test_the_minatar_part_plays_whole_games_of_the_shipped_agent(tmp_path):
    settings = RunSettings(episodes=2, calibration_frames=200, max_steps=30, n_envs=4, env_id="ignored-v0")
    result = demo.run_minatar_demo(settings, tmp_path / "minatar", games=4, bits=4, test_frames=32)
    assert result.header.env_id == "MinAtar/Breakout-v1" and result.header.settings["max_steps"] == 10_000
    assert len(result.dqn_score.scores) == 4 and result.dqn_score.truncated == 0  # whole games, not the Atari cap
    paper, ours = result.conversions
    assert (paper.conversion.T, ours.conversion.T, ours.latency_steps) == (12, 4, 12)  # 3 weighted layers
    assert all(len(row.snn.score.scores) == 4 for row in result.conversions)
    assert {"result.json", "demo.md", "scores.md", "agreement_vs_latency.png"} <= {
        p.name for p in (tmp_path / "minatar").iterdir()}


def test_negative_minatar_games_are_refused(capsys):
    assert main(["demo", "--minatar-games", "-1"]) == 2
    assert "--minatar-games must be at least 0" in capsys.readouterr().err


# ---------------------------------------------------------------- the demo's numbers, from fakes with distinct values


def test_a_demo_row_takes_the_n_plus_v_curve_and_each_points_own_latency(monkeypatch):
    from types import SimpleNamespace

    from dqn2snn_plugin.coding import BINARY
    from dqn2snn_plugin.experiments.records import Agreement, Conversion, CurvePoint
    from distinct_records import SNN_PLAY

    row = Conversion("ours", "binary", 8, 99.99, True, (4, 8))
    snn = SimpleNamespace(coding=BINARY, synapses=[0, 1, 2], scales=SimpleNamespace(as_dict=lambda: {"s": 1}))
    calls = {}

    def fake_convert(checkpoint, calibration, **options):
        calls["convert"] = options
        return snn

    def fake_curve(checkpoint, network, states, Ts):
        assert network is snn and Ts == [4, 8]
        return {4: {"spikes+membrane": Agreement(0.61, None, None, 5), "spikes": Agreement(0.41, None, None, 5)},
                8: {"spikes+membrane": Agreement(0.93, None, None, 5), "spikes": Agreement(0.73, None, None, 5)}}

    def fake_play(checkpoint, network, T, settings):
        calls["play"] = (T, settings.readout)
        return SNN_PLAY

    monkeypatch.setattr(demo, "convert", fake_convert)
    monkeypatch.setattr(demo, "heldout_agreement", fake_curve)
    monkeypatch.setattr(demo, "play_snn", fake_play)
    measured = demo._measure(None, row, None, None, RunSettings(readout="spikes", channel_wise=False))
    # binary coding, 3 weighted layers: latency 3 T
    assert measured.latency_steps == 24
    assert measured.heldout == [CurvePoint(4, 12, 0.61), CurvePoint(8, 24, 0.93)]
    assert measured.snn is SNN_PLAY and calls["play"] == (8, "spikes+membrane")
    assert {k: calls["convert"][k] for k in ("percentile", "channel_wise", "coding", "T", "readout")} == {
        "percentile": 99.99, "channel_wise": True, "coding": "binary", "T": 8, "readout": "spikes+membrane"}


def test_the_demo_files_and_plot_show_each_conversions_own_numbers(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from torch import nn

    from dqn2snn_plugin.experiments import plots
    from distinct_records import DQN_SCORE, DRAW, HEADER, demo_result, markdown_cells

    rows = iter(demo_result().conversions)
    drawn = {}
    monkeypatch.setattr(demo, "calibration_and_heldout_states", lambda checkpoint, settings, frames: (
        None, None, DRAW, DRAW))
    monkeypatch.setattr(demo, "play_dqn", lambda checkpoint, settings: (DQN_SCORE, None))
    monkeypatch.setattr(demo, "header", lambda checkpoint, settings: HEADER)
    monkeypatch.setattr(demo, "_measure", lambda *args: next(rows))
    monkeypatch.setattr(plots, "plot_agreement_vs_latency", lambda path, lines, title: drawn.update(lines))
    checkpoint = SimpleNamespace(q_network=nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)), env_id="X")
    demo.run_demo(checkpoint, RunSettings(episodes=2), tmp_path / "out", bits=8, test_frames=64)
    assert drawn == {"paper": [(8, 0.501), (32, 0.702)], "ours": [(20, 0.603), (40, 0.904)]}  # (latency, agreement)
    dqn, paper, ours = markdown_cells((tmp_path / "out" / "demo.md").read_text())
    assert (dqn["score (mean ± std)"], paper["score (mean ± std)"], ours["score (mean ± std)"]) == (
        "12.0 ± 2.0", "2.0 ± 1.0", "25.0 ± 5.0")
    assert (paper["held-out agreement"], ours["held-out agreement"]) == ("70.2%", "90.4%")
    written = json.loads((tmp_path / "out" / "result.json").read_text())
    assert written["dqn"]["score"]["mean"] == 12.0 and written["test_frames"] == 64
    assert [c["snn"]["score"]["mean"] for c in written["conversions"]] == [2.0, 25.0]
    assert [c["latency_steps"] for c in written["conversions"]] == [32, 40]
