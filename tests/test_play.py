"""Bring your own environment: `play`, `collect_observations` and the agreement hook on a user's vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ale_py.vector_env import AtariVectorEnv

from dqn2snn_plugin.calibration import collect_observations
from dqn2snn_plugin.envs.play import play
from dqn2snn_plugin.errors import ConfigError, ObservationError
from dqn2snn_plugin.metrics import AgreementRecorder

from conftest import atari_checkpoint, tiny_checkpoint

SAME_STEP = gym.vector.AutoresetMode.SAME_STEP


def deterministic_pong(n: int) -> AtariVectorEnv:
    """`PongDeterministic-v4`'s dynamics (frame skip 4 without max-pool, no no-op starts, no FIRE), as
    a user would build it: any vector env with same-step autoreset will do."""
    return AtariVectorEnv("pong", n, frameskip=4, maxpool=False, noop_max=0, use_fire_reset=False,
                          reward_clipping=False, autoreset_mode=SAME_STEP)


def cartpole_with_my_wrapper(n: int) -> gym.vector.VectorEnv:
    """CartPole whose observations the user scaled by 10 with a wrapper of their own."""
    return gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": SAME_STEP},
                        wrappers=[lambda env: gym.wrappers.TransformObservation(env, lambda o: o * 10, env.observation_space)])


@pytest.mark.slow
def test_play_and_collect_on_a_users_atari_env(tmp_path):
    dqn = atari_checkpoint("PongNoFrameskip-v4")
    results = play(dqn.act, None, 2, n_envs=2, max_steps=30, env_factory=deterministic_pong)
    assert results == play(dqn.act, None, 2, n_envs=2, max_steps=30, env_factory=deterministic_pong)
    assert all(r.truncated and r.length == 30 for r in results)
    frames = collect_observations(dqn, 16, n_envs=4, env_factory=deterministic_pong, cache_dir=tmp_path)
    first, _ = deterministic_pong(4).reset(seed=0)
    assert np.array_equal(frames[:4], first) and list(tmp_path.iterdir()) == []  # a factory has no cache key


def test_the_agreement_hook_runs_on_a_users_env():
    dqn = tiny_checkpoint(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    seen = []
    recorder = AgreementRecorder(dqn, lambda obs, T: dqn.q_values(obs), T=1)
    play(dqn.act, "my-cartpole", 2, n_envs=2, max_steps=20, env_factory=cartpole_with_my_wrapper,
         on_step=lambda obs, *_: seen.append(obs) or recorder(obs, *_))
    assert recorder.n_states == sum(map(len, seen)) and recorder.results()["default"].rate == 1.0
    assert np.abs(np.concatenate(seen)).max() > 0.5  # the user's wrapper was applied (raw CartPole stays small)


@pytest.mark.parametrize("factory, message", [
    (lambda n: gym.make("CartPole-v1"), "not a gymnasium vector env"),
    (lambda n: gym.make_vec("CartPole-v1", num_envs=n), "autoreset_mode=gym.vector.AutoresetMode.SAME_STEP"),
    (lambda n: gym.make_vec("CartPole-v1", num_envs=n + 1, vectorization_mode="sync", vector_kwargs={"autoreset_mode": SAME_STEP}),
     "made 3 envs when asked for 2"),
    (lambda n: gym.make_vec("Pendulum-v1", num_envs=n, vector_kwargs={"autoreset_mode": SAME_STEP}),
     "discrete action space"),
])
def test_unusable_user_envs_are_refused(factory, message):
    with pytest.raises(ConfigError, match=message):
        play(lambda obs: np.zeros(len(obs)), None, 2, n_envs=2, env_factory=factory)


def test_protocol_and_factory_exclude_each_other_and_actions_must_exist():
    with pytest.raises(ConfigError, match="either env_factory or protocol"):
        play(lambda obs: np.zeros(len(obs)), None, 1, env_factory=deterministic_pong, protocol="sb3")
    with pytest.raises(ConfigError, match="either env_factory or protocol"):
        collect_observations(atari_checkpoint("PongNoFrameskip-v4"), 8, env_factory=deterministic_pong, protocol="sb3")
    with pytest.raises(ConfigError, match="env_id or an env_factory"):
        play(lambda obs: np.zeros(len(obs)), None, 1)
    with pytest.raises(ObservationError, match="action 7 but the env has 6"):
        play(lambda obs: np.full(len(obs), 7), None, 1, env_factory=deterministic_pong)


class EpisodeTracker:
    """A stateful policy that records, per env, its decisions and where `play` says episodes start."""

    def __init__(self) -> None:
        self.decisions: dict[int, list[bool]] = {}

    def act_envs(self, obs, envs, episode_start):
        assert len(obs) == len(envs) == len(episode_start)
        for env, start in zip(envs.tolist(), episode_start.tolist()):
            self.decisions.setdefault(env, []).append(start)
        return np.zeros(len(obs), dtype=np.int64)

    def __call__(self, obs):  # `play` must not call a stateful policy this way
        raise AssertionError("called without envs")


def test_a_stateful_policy_learns_each_envs_index_and_episode_starts():
    tracker = EpisodeTracker()
    results = play(tracker, "CartPole-v1", 5, n_envs=2, epsilon=0.0, seed=0)
    per_env = {0: [r.length for r in results[:3]], 1: [r.length for r in results[3:]]}  # env 0 plays 3, env 1 plays 2
    for env, lengths in per_env.items():
        starts = np.flatnonzero(tracker.decisions[env])
        # an episode starts at its first decision, and each lasts as many decisions as its recorded length
        assert starts.tolist() == np.cumsum([0, *lengths[:-1]]).tolist()
        assert len(tracker.decisions[env]) == sum(lengths)  # an env that finished its games is asked no more
