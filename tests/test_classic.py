"""Gymnasium's vector-observation tasks end to end: RL-Zoo's classic-control DQNs convert, act and play."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from dqn2snn_plugin.envs import classic
from dqn2snn_plugin.envs.atari import check_action_count, play
from dqn2snn_plugin.envs.play import check_observation_shape
from dqn2snn_plugin.calibration import collect_observations
from dqn2snn_plugin.checkpoint import load_dqn
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.errors import EnvIdError
from dqn2snn_plugin.experiments.evaluation import evaluate
from dqn2snn_plugin.experiments.settings import RunSettings

HAS_BOX2D = importlib.util.find_spec("Box2D") is not None


@pytest.mark.parametrize("env_id, n_actions", [("CartPole-v1", 2), ("Acrobot-v1", 3), ("MountainCar-v0", 3)])
def test_tasks_without_system_packages_play_seeded_whole_episodes(env_id, n_actions):
    check_action_count(env_id, n_actions)
    with pytest.raises(EnvIdError, match="actions"):
        check_action_count(env_id, n_actions + 1)
    seen = []
    episodes = play(lambda obs: np.zeros(len(obs), dtype=np.int64), env_id, 2, n_envs=2, epsilon=0.5, seed=3,
                    max_steps=50, on_step=lambda obs, greedy, taken: seen.append(obs.copy()))
    assert len(episodes) == 2 and all(1 <= e.length <= 50 for e in episodes)
    assert seen[0].dtype == np.float32 and seen[0].shape[0] == 2
    again = play(lambda obs: np.zeros(len(obs), dtype=np.int64), env_id, 2, n_envs=2, epsilon=0.5, seed=3,
                 max_steps=50)
    assert again == episodes


@pytest.mark.skipif(HAS_BOX2D, reason="Box2D is installed here")
def test_lunar_lander_without_box2d_says_what_to_install():
    with pytest.raises(EnvIdError, match="LunarLander-v2 cannot be played here.*box2d"):
        classic.make_env("LunarLander-v2", 1)


def test_unknown_task_is_an_env_id_error():
    with pytest.raises(EnvIdError, match="NoSuchTask-v0"):
        play(lambda obs: obs[:, 0], "NoSuchTask-v0", 1)


def test_zoo_dqns_convert_and_act_on_negative_inputs(zoo_zip):
    """Both codings act on raw float observations, negative values included (analog input current)."""
    checkpoint = load_dqn(zoo_zip)
    rng = np.random.default_rng(0)
    states = rng.normal(0.0, 1.0, size=(300, *checkpoint.observation_shape)).astype(np.float32)
    assert (states < 0).any()
    for coding, T in (("rate", 256), ("binary", 10)):
        snn = convert(checkpoint, states[:200], percentile=99.99, coding=coding, T=T, channel_wise=coding == "binary")
        actions = snn.act(states[200:])
        assert actions.shape == (100,)
        agreement = float((actions == checkpoint.act(states[200:])).float().mean())
        assert agreement > 0.8, (coding, agreement)


def test_cartpole_calibrates_on_its_own_play_and_evaluates(fixtures_dir, tmp_path):
    checkpoint = load_dqn(fixtures_dir / "sb3-zoo" / "classic" / "CartPole-v1.zip")
    frames = collect_observations(checkpoint, 300, n_envs=2, cache_dir=tmp_path)
    assert frames.dtype == np.float32 and frames.shape == (300, 4) and np.isfinite(frames).all()
    assert (frames < 0).any()  # cart positions and velocities on both sides
    settings = RunSettings(episodes=2, calibration_frames=300, max_steps=100, n_envs=2, coding="binary",
                           channel_wise=True)
    snn = convert(checkpoint, frames, percentile=99.99, coding="binary", T=8, channel_wise=True)
    result = evaluate(checkpoint, T=8, percentile=99.99, settings=settings, snn=snn).to_json()
    assert result["env_id"] == "CartPole-v1"
    assert result["dqn"]["score"]["mean"] == 100.0  # the trained DQN balances to the 100-step cap
    assert result["snn"]["agreement_snn_visited"]["spikes+membrane"]["rate"] > 0.8
    assert result["snn"]["synaptic_ops_per_decision"] > 0


def test_cli_convert_saves_a_cartpole_snn_and_its_nir_graph(fixtures_dir, tmp_path, monkeypatch):
    from dqn2snn_plugin.cli import main
    from dqn2snn_plugin.io.store import load_snn

    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path / "cache"))
    zoo = fixtures_dir / "sb3-zoo" / "classic" / "CartPole-v1.zip"
    assert main(["convert", str(zoo), "--calibration-frames", "200", "--n-envs", "2", "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "snn.nir").stat().st_size > 0
    snn, dqn = load_snn(tmp_path / "o" / "snn.pt")
    states = np.array([[0.1, -0.5, 0.02, -0.3], [-0.1, 0.4, -0.05, 0.6]], dtype=np.float32)
    assert snn.act(states, T=256).tolist() == dqn.act(states).tolist()


@pytest.mark.parametrize("env_id, module, needs", [
    ("HalfCheetah-v3", "mujoco_py", "gymnasium-robotics"),  # MuJoCo v2/v3 ids need mujoco-py
    ("GymV26Environment-v0", "shimmy", "shimmy"),
    ("phys2d/CartPole-v1", "jax", "the package 'jax', which is not installed"),
    ("tabular/Blackjack-v0", "jax", "the package 'jax', which is not installed"),
])
def test_ids_needing_packages_not_installed_name_the_package(env_id, module, needs):
    """Issue 24.7: an ImportError from the id's entry point is an EnvIdError naming what is missing."""
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with warnings.catch_warnings(record=True) as said, \
            pytest.raises(EnvIdError, match=rf"^{env_id} cannot be played here: .*{needs}"):
        warnings.simplefilter("always")
        classic.action_count(env_id)
    assert [str(w.message) for w in said] == []  # gymnasium's "out of date" is not a second line


@pytest.mark.parametrize("env_id, shape, message", [
    ("Blackjack-v1", (4,), r"Blackjack-v1 gives Tuple\(Discrete\(32\), Discrete\(11\), Discrete\(2\)\) observations, "
                           "not arrays of numbers"),
    ("FrozenLake-v1", (16,), r"FrozenLake-v1 gives Discrete\(16\) observations"),
    ("Acrobot-v1", (4,), r"reads observations of shape \(4,\) but Acrobot-v1 gives \(6,\)"),
    ("CartPole-v1", (4, 84, 84), r"reads observations of shape \(4, 84, 84\) but CartPole-v1 gives \(4,\)"),
    ("BreakoutNoFrameskip-v4", (4,), r"reads observations of shape \(4,\) but BreakoutNoFrameskip-v4 gives "
                                     r"\(4, 84, 84\)"),
])
def test_observation_shapes_that_do_not_fit_the_env_are_refused(env_id, shape, message):
    check_observation_shape("CartPole-v1", (4,))
    check_observation_shape("BreakoutNoFrameskip-v4", (4, 84, 84))
    with pytest.raises(EnvIdError, match=message):
        check_observation_shape(env_id, shape)


@pytest.mark.parametrize("command", [["evaluate", "--episodes", "1"], ["inspect"]])
def test_a_cartpole_dqn_on_blackjack_is_refused_in_one_line_before_any_work(fixtures_dir, tmp_path, capsys, command,
                                                                            monkeypatch):
    """Issue 24.7: Blackjack has CartPole's 2 actions, so only the observations tell; refused before calibration."""
    from dqn2snn_plugin import calibration
    from dqn2snn_plugin.cli import main

    monkeypatch.setattr(calibration, "_play_frames", lambda *a, **k: pytest.fail("calibration started"))
    zoo = str(fixtures_dir / "sb3-zoo" / "classic" / "CartPole-v1.zip")
    out = ["-o", str(tmp_path / "out.json")] if command[0] == "evaluate" else []
    assert main([command[0], zoo, "--env-id", "Blackjack-v1", *command[1:], *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dqn2snn: error: Blackjack-v1 gives Tuple(") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EnvIdError, match="Blackjack-v1 gives Tuple"):
        collect_observations(load_dqn(zoo, env_id="Blackjack-v1"), 10, cache_dir=tmp_path)


def test_ids_are_renamed_and_told_apart_from_atari():
    import ale_py  # noqa: F401  (registers the Atari ids with gymnasium)

    assert classic.gymnasium_id("LunarLander-v2") == "LunarLander-v3" and classic.gymnasium_id("Acrobot-v1") == (
        "Acrobot-v1")
    assert classic.is_classic("CartPole-v1") and classic.is_classic("LunarLander-v2")  # registered as v3
    assert not classic.is_classic("PongNoFrameskip-v4") and not classic.is_classic("NoSuchTask-v0")
    assert (classic.action_count("CartPole-v1"), classic.action_count("Acrobot-v1")) == (2, 3)


def test_env_i_is_seeded_with_seed_plus_i():
    """Each copy starts where gymnasium's own env reset with seed + i starts."""
    import gymnasium as gym

    env = classic.make_env("CartPole-v1", 3, seed=7)
    try:
        starts = [np.asarray(copy.unwrapped.state) for copy in env.envs]
    finally:
        env.close()
    for i, start in enumerate(starts):
        alone = gym.make("CartPole-v1")
        expected, _ = alone.reset(seed=7 + i)
        alone.close()
        np.testing.assert_array_equal(start.astype(np.float32), expected)
    assert not np.array_equal(starts[0], starts[1])
