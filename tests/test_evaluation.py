"""evaluate: games, agreement on both state sets, calibration states apart from the games; convert-reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.coding import RATE
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.envs.atari import play
from dqn2snn_plugin.experiments import evaluation as ev
from dqn2snn_plugin.experiments.records import AGREEMENT_READOUTS, Evaluation, StateDraw
from dqn2snn_plugin.experiments.report import format_evaluation
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.io.store import load_snn, save_snn
from conftest import atari_checkpoint

TINY = RunSettings(episodes=2, calibration_frames=300, max_steps=60, n_envs=2)


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
    settings = RunSettings(episodes=2, max_steps=200, n_envs=2)
    dqn_score, _ = ev.play_dqn(checkpoint, settings)
    result = ev.play_snn(checkpoint, snn, 5, settings)
    assert result.score == dqn_score  # the same actions on the same seeds: the same games
    assert dqn_score.mean > 0  # games in which playing another action shows
    for readout in AGREEMENT_READOUTS:
        assert result.agreement_snn_visited[readout].rate == 1.0
        assert result.agreement_snn_visited[readout].n_states == sum(dqn_score.lengths)
    assert result.spikes_per_decision == (3 + 2) * 5  # every neuron fires at each of 5 steps
    # a spike of layer 1 reaches the 2 neurons of layer 2, one of layer 2 the 4 outputs
    assert result.synaptic_ops_per_decision == 3 * 5 * 2 + 2 * 5 * 4


def reference_games(policy, checkpoint, snn, T, settings):
    """Games played step by step here: the score of `policy`, and on every visited state whether the
    SNN's greedy action (on the settings' readout, and on the spike count) equals the DQN's."""
    matches = {readout: [] for readout in AGREEMENT_READOUTS}

    def record(obs, greedy, taken):
        dqn_actions = checkpoint.act(obs)
        readouts = snn.readouts(obs, T)
        for readout in matches:
            matches[readout] += (readouts[readout].argmax(1) == dqn_actions).tolist()

    episodes = play(policy, checkpoint.env_id, settings.episodes, n_envs=settings.n_envs, epsilon=settings.epsilon,
                    seed=settings.seed, max_steps=settings.max_steps, on_step=record)
    return [e.score for e in episodes], [e.length for e in episodes], matches


@pytest.mark.slow
@pytest.mark.atari
def test_evaluate_reports_the_games_each_player_played(tmp_path, atari_observations):
    """Breakout's fixture DQN at T = 4 (agreement well below 100%): evaluate's scores and both
    agreements equal those of games played here with the SNN's greedy action on its readout."""
    checkpoint = atari_checkpoint()
    snn = convert(checkpoint, atari_observations, percentile=99.9, T=4)
    evaluation = ev.evaluate(checkpoint, T=4, percentile=99.9, settings=TINY, snn=snn)
    result = json.loads(json.dumps(evaluation.to_json()))
    assert Evaluation.from_json(result) == evaluation  # the JSON holds the whole record

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
    table = format_evaluation(evaluation)
    assert "DQN plays" in table and "SNN plays" in table


def test_heldout_agreement_of_each_T_equals_a_separate_run_at_that_T(mlp_checkpoint):
    """One simulation of max(T) steps serves every T; each must equal its own T-step run, per readout."""
    snn = convert(mlp_checkpoint, torch.randn(200, 6), T=16)
    states = torch.randn(90, 6).numpy()
    summaries = ev.heldout_agreement(mlp_checkpoint, snn, states, [2, 5, 16], batch_size=40)
    q = mlp_checkpoint.q_values(states)
    for T, summary in summaries.items():
        readouts = snn.readouts(states, T)
        for readout in AGREEMENT_READOUTS:
            expected = (readouts[readout].argmax(1) == q.argmax(1)).double().mean()
            assert summary[readout].rate == pytest.approx(float(expected), abs=1e-12), (T, readout)
            assert summary[readout].n_states == 90
    rates = [summaries[T][r].rate for T in (2, 16) for r in AGREEMENT_READOUTS]
    assert len(set(rates)) > 1  # the readouts and T differ here, so a mix-up would show


def test_convert_then_reload_gives_identical_outputs(tmp_path, atari_observations):
    checkpoint = atari_checkpoint()
    states, _ = ev.calibration_states(checkpoint, TINY)
    snn = convert(checkpoint, states, percentile=99.0, T=16, initial_membrane="half")
    save_snn(snn, checkpoint, tmp_path / "snn.pt")
    reloaded, dqn = load_snn(tmp_path / "snn.pt")
    for name, values in snn.readouts(atari_observations, T=16).items():
        assert torch.equal(values, reloaded.readouts(atari_observations, T=16)[name])
    assert torch.equal(dqn.q_values(atari_observations), checkpoint.q_values(atari_observations))
    assert (reloaded.T, reloaded.initial_membrane, dqn.env_id) == (16, 0.5, checkpoint.env_id)


@pytest.mark.slow
def test_calibration_states_come_from_episodes_apart_from_the_measured_games(monkeypatch, tmp_path):
    """With episodes >= n_envs the DQN's measured games used to start from the calibration episodes'
    seeds, so the calibration states were exactly their first states. Now the envs of the two never
    share a seed, the states differ, and the result says how the calibration states were drawn."""
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path))  # nothing cached: the calibration games are played
    checkpoint = atari_checkpoint()
    seeds = {"games": [], "calibration": []}
    real_play = ev.play

    def games(policy, env_id, episodes, **options):
        seeds["games"].append(options["seed"])
        return real_play(policy, env_id, episodes, **options)

    monkeypatch.setattr(ev, "play", games)
    monkeypatch.setattr("dqn2snn_plugin.calibration.play", lambda *a, **o: seeds["calibration"].append(o["seed"])
                        or real_play(*a, **o))
    result = ev.evaluate(checkpoint, T=4, percentile=99.9, settings=TINY)
    (calibration_seed,) = seeds["calibration"]
    assert set(seeds["games"]) == {TINY.seed}  # the DQN's games, then the SNN's
    assert abs(calibration_seed - TINY.seed) >= TINY.n_envs  # env seeds seed + i never meet
    assert result.calibration_states == StateDraw(TINY.calibration_frames, calibration_seed, TINY.n_envs, TINY.epsilon,
                                                 separate=True)
    assert result.to_json()["calibration_states"]["first_seed"] == calibration_seed

    calibration, _ = ev.calibration_states(checkpoint, TINY)
    visited = []
    real_play(checkpoint.act, checkpoint.env_id, TINY.episodes, n_envs=TINY.n_envs, epsilon=TINY.epsilon,
              seed=TINY.seed, max_steps=TINY.max_steps, on_step=lambda obs, greedy, taken: visited.append(obs.copy()))
    visited = np.concatenate(visited)
    n = min(len(visited), len(calibration))
    assert not np.array_equal(calibration[:n], visited[:n])


def test_evaluate_and_a_benchmark_cell_play_in_the_users_own_env():
    """Every game of `evaluate` (calibration too) and of a benchmark cell runs in the user's vector env,
    with their wrappers, and the result names the factory instead of a protocol."""
    import gymnasium as gym
    from torch import nn

    from dqn2snn_plugin.experiments.grid import Setting, measure_cell

    seen = []

    def my_cartpole(n: int) -> gym.vector.VectorEnv:
        seen.append(n)
        scaled = gym.wrappers.TransformObservation  # the user's own wrapper: observations x 10
        return gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                            wrappers=[lambda env: scaled(env, lambda o: o * 10, env.observation_space)])

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    dqn = DQNCheckpoint(q_network=net, n_actions=2, observation_shape=(4,), policy="MlpPolicy", algorithm="DQN",
                        sb3_version=None, env_id="CartPole-v1", source="<test>")
    settings = RunSettings(episodes=2, calibration_frames=50, max_steps=30, n_envs=2)
    result = ev.evaluate(dqn, T=8, percentile=99.9, settings=settings, env_factory=my_cartpole)
    assert seen == [2, 2, 2]  # calibration, the DQN's games, the SNN's games
    assert result.header.protocol == {"env_factory": "test_evaluate_and_a_benchmark_cell_play_in_the_users_own_env."
                                                      "<locals>.my_cartpole"}
    assert result.dqn_score.scores and all(length <= 30 for length in result.dqn_score.lengths)
    cell = measure_cell(dqn, Setting("rate", 8, 99.9, False), settings, env_factory=my_cartpole)
    assert len(seen) == 6 and cell.evaluation.header.protocol == result.header.protocol


@pytest.mark.atari
def test_evaluate_prices_every_decision_of_the_snns_games_by_hand(atari_observations):
    """The constant DQN at T = 5: every hidden neuron fires at each step whatever the frame, so every
    decision costs the same, counted here by hand (fp32, weights read per event, Horowitz 45 nm)."""
    checkpoint = constant_breakout_dqn()
    snn = convert(checkpoint, atari_observations, percentile="max", T=5)
    settings = RunSettings(episodes=2, max_steps=100, n_envs=2)
    result = ev.evaluate(checkpoint, T=5, percentile="max", settings=settings, snn=snn)
    fp32_mac, fp32_add, sram_8kb, sram_1mb = 3.7 + 0.9, 0.9, 10 / 8, 100 / 8
    pixels = 4 * 84 * 84
    # linear 1: the frame is analog, one dense pass of pixels x 3 MACs reading its fp32 weights (> 32 KB) once;
    # 3 neurons x 5 steps, each reading and writing a 4-byte membrane; the frame read once (4 bytes a pixel, > 32 KB)
    layer1 = pixels * 3 * fp32_mac + 15 * fp32_add + pixels * 3 * 4 * sram_1mb + 15 * 8 * sram_8kb + pixels * 4 * sram_1mb
    # linear 2: 15 spikes x 2 synapses; 2 neurons x 5 steps. linear 3: 10 spikes x 4 synapses; 4 neurons x 5 steps
    layer2 = (30 + 10) * fp32_add + 30 * 4 * sram_8kb + 10 * 8 * sram_8kb
    layer3 = (40 + 20) * fp32_add + 40 * 4 * sram_8kb + 20 * 8 * sram_8kb
    cost = result.snn.cost
    assert cost.snn.energy_pj == pytest.approx(layer1 + layer2 + layer3)
    # every state the SNN visited was priced, and none other
    assert cost.snn.settings["decisions"] == result.snn.agreement_snn_visited["spikes"].n_states
    # the int8 DQN: pixels x 3 + 6 + 8 MACs, 1-byte weights (pixels x 3 in 1 MB, 6 and 8 in 8 KB), activations
    # in and out (the frame's array, 28 KB, in 32 KB)
    dqn = ((pixels * 3 + 6 + 8) * 0.3 + pixels * 3 * sram_1mb + (6 + 8) * sram_8kb + (pixels + 3) * 20 / 8
           + (3 + 2 + 2 + 4) * sram_8kb)
    assert cost.dqn_int8.energy_pj == pytest.approx(dqn) and not cost.cheaper
    # the printed table shows the record's numbers
    printed = format_evaluation(result).splitlines()
    head = [c.strip() for c in printed[1].split("|")]
    snn_row = [c.strip() for c in printed[4].split("|")]
    energy = head.index("energy per decision (µJ)")
    assert float(snn_row[energy]) == pytest.approx((layer1 + layer2 + layer3) / 1e6, abs=0.005)
    assert float(snn_row[energy + 1]) == pytest.approx((layer1 + layer2 + layer3) / dqn, rel=5e-3)
    assert snn_row[energy + 2] == "no"
    written = json.loads(json.dumps(result.to_json()))
    assert written["snn"]["cost"]["snn_energy_uj"] == pytest.approx((layer1 + layer2 + layer3) / 1e6)
    assert Evaluation.from_json(written) == result


# ---------------------------------------------------------------- the SNN player, on a fake SNN (no game played)


class _NoCosts:
    """Stands in for the cost meter and its comparison (tests/test_costs.py prices real networks)."""

    def __init__(self, *args, **options):
        pass

    def add(self, stats, obs):
        pass

    def report(self, *args):
        return None


class _TwoReadoutSnn:
    """An "SNN" whose spike-count readout picks action 0 and whose N + V readout picks action 1 plus the
    observation's first value (so a new observation changes the action); counts its simulations."""

    carry_state = False
    coding = RATE

    def __init__(self) -> None:
        self.simulations = 0
        self.last_stats = None

    def reset_state(self, rows=None) -> None:
        pass

    def readouts(self, obs, T):
        from types import SimpleNamespace

        self.simulations += 1
        rows = len(obs)
        nv = torch.zeros(rows, 4)
        nv[torch.arange(rows), 1 + torch.as_tensor(obs[:, 0], dtype=torch.int64)] = 1.0
        self.last_stats = SimpleNamespace(spikes=[torch.full((rows,), 3.0), torch.full((rows,), 4.0)],
                                          synaptic_ops=torch.full((rows,), 10.0))
        return {"spikes": torch.eye(4)[[0] * rows], "spikes+membrane": nv}


def test_the_snn_plays_on_the_settings_readout(monkeypatch):
    from dqn2snn_plugin.envs.play import EpisodeResult

    played = {}

    def fake_play(policy, env_id, episodes, **options):
        played["actions"] = policy(np.array([[0.0], [1.0]])).tolist()
        return [EpisodeResult(1.0, 10, False)]

    class NoRecorder:
        def __init__(self, *args, **options):
            pass

        def results(self):
            return {}

    monkeypatch.setattr(ev, "play", fake_play)
    monkeypatch.setattr(ev, "AgreementRecorder", NoRecorder)
    monkeypatch.setattr(ev, "CostMeter", _NoCosts)
    monkeypatch.setattr(ev, "compare_with_dqn", lambda *args: None)
    checkpoint = DQNCheckpoint(nn.Sequential(nn.Linear(1, 4)), 4, (1,), "MlpPolicy", "DQN", None, "X-v0", "<test>")
    result = ev.play_snn(checkpoint, _TwoReadoutSnn(), 8, RunSettings(readout="spikes+membrane"))
    assert played["actions"] == [1, 2]  # the N + V readout's actions, not the spike count's (0, 0)
    # per decision: 3 + 4 spikes and 10 synaptic operations per state, two states in one call
    assert (result.spikes_per_decision, result.synaptic_ops_per_decision) == (7.0, 10.0)


def test_the_player_simulates_every_decision_and_the_recorder_reuses_it(monkeypatch):
    monkeypatch.setattr(ev, "CostMeter", _NoCosts)
    snn = _TwoReadoutSnn()
    player = ev._SnnPlayer(snn, 8, "spikes+membrane")
    first, second = np.array([[0.0], [1.0]]), np.array([[2.0], [0.0]])
    assert player(first).tolist() == [1, 2] and snn.simulations == 1
    assert player.readouts(first.copy())["spikes+membrane"].argmax(1).tolist() == [1, 2]
    assert snn.simulations == 1  # the recorder's call on the decision just taken: no new simulation
    assert player(first.copy()).tolist() == [1, 2] and snn.simulations == 2  # a decision is always simulated
    assert player(second).tolist() == [3, 1] and snn.simulations == 3
    assert player.readouts(first)["spikes+membrane"].argmax(1).tolist() == [1, 2]  # other states: simulated afresh
    assert snn.simulations == 4 and player.decisions == 6  # ... and not counted as decisions
