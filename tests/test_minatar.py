"""MinAtar games: ids, protocol settings, observation layouts and dtypes, and tiny networks of their shape."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin.calibration import collect_observations
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.envs import minatar
from dqn2snn_plugin.envs.play import action_count, check_action_count, play
from dqn2snn_plugin.errors import ConfigError, EnvIdError, ObservationError
from dqn2snn_plugin.metrics import agreement

BREAKOUT = "MinAtar/Breakout-v1"  # (10, 10, 4) planes, 3 actions


def minatar_checkpoint(layout: str, env_id: str = BREAKOUT, seed: int = 0) -> DQNCheckpoint:
    """A random network of MinAtar's shape: a CNN on channel-first planes (as SB3 users wrap them) or
    an MLP on MinAtar's own (10, 10, C) planes."""
    torch.manual_seed(seed)
    (height, width, channels), n_actions = minatar._native_space(env_id)
    if layout == "chw":
        shape = (channels, height, width)
        network = nn.Sequential(nn.Conv2d(channels, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, n_actions))
    else:
        shape = (height, width, channels)
        network = nn.Sequential(nn.Flatten(), nn.Linear(height * width * channels, 32), nn.ReLU(), nn.Linear(32, n_actions))
    return DQNCheckpoint(q_network=network.eval(), n_actions=n_actions, observation_shape=shape,
                         policy="CnnPolicy" if layout == "chw" else "MlpPolicy", algorithm="DQN", sb3_version=None,
                         env_id=env_id, source="<test>")


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_the_network_gets_bool_planes_in_its_checkpoints_layout(layout, tmp_path):
    dqn = minatar_checkpoint(layout)
    frames = collect_observations(dqn, 64, n_envs=4, cache_dir=tmp_path)
    assert frames.shape == (64, *dqn.observation_shape) and frames.dtype == np.bool_
    native = np.stack([minatar.make_env(BREAKOUT, 4, seed=0).reset(seed=0)[0]])[0]
    first = frames[:4] if layout == "hwc" else frames[:4].transpose(0, 2, 3, 1)
    assert np.array_equal(first, native)  # the same first states, only transposed
    assert frames.any() and dqn.act(frames).shape == (64,)
    snn = convert(dqn, frames, T=32)
    assert agreement(dqn, snn, frames, T=32).rate > 0.5


def test_ten_planes_are_read_channel_first():
    # Seaquest's (10, 10, 10) is both layouts' shape: the SB3 CNN convention (the shipped agent's) wins
    assert minatar.channels_first("MinAtar/Seaquest-v1", (10, 10, 10))
    assert not minatar.channels_first("MinAtar/Seaquest-v1", None)
    env = minatar.make_env("MinAtar/Seaquest-v1", 1, seed=0, observation_shape=(10, 10, 10))
    native = minatar.make_env("MinAtar/Seaquest-v1", 1, seed=0)
    first, own = env.reset(seed=0)[0][0], native.reset(seed=0)[0][0]
    assert own.any() and not np.array_equal(first, own) and np.array_equal(first, own.transpose(2, 0, 1))


def test_play_scores_whole_minatar_episodes_under_its_protocol():
    policy = minatar_checkpoint("hwc").act
    results = play(policy, BREAKOUT, 4, n_envs=2, seed=1, max_steps=500)
    assert len(results) == 4 and all(r.length >= 1 for r in results)
    assert play(policy, BREAKOUT, 4, n_envs=2, seed=1, max_steps=500) == results
    for protocol, sticky, ramping in [(None, 0.1, True), ("minatar,sticky_actions=0,difficulty_ramping=false", 0.0, False)]:
        game = minatar.make_env("MinAtar/Asterix-v1", 1, protocol=protocol).envs[0].unwrapped.game  # Asterix ramps
        assert (game.sticky_action_prob, game.env.ramping) == (sticky, ramping)
    assert action_count(BREAKOUT) == 3 and action_count("MinAtar/Seaquest-v1") == 6
    with pytest.raises(EnvIdError, match="3"):
        check_action_count(BREAKOUT, 6)


def test_wrong_ids_layouts_and_protocols_are_refused():
    with pytest.raises(EnvIdError, match="Breakout, Freeway"):
        play(lambda obs: np.zeros(len(obs)), "MinAtar/Pong-v1", 1)
    with pytest.raises(ConfigError, match="for atari games, not minatar"):
        play(lambda obs: np.zeros(len(obs)), BREAKOUT, 1, protocol="paper")
    with pytest.raises(ObservationError, match=r"\(4, 10, 10\) channel-first"):
        play(lambda obs: np.zeros(len(obs)), BREAKOUT, 1, observation_shape=(10, 4, 10))


def test_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "minatar", None)  # import minatar now raises ImportError
    monkeypatch.setattr(minatar.gym.envs, "registry", {})
    with pytest.raises(EnvIdError, match="pip install minatar"):
        minatar.make_env(BREAKOUT, 1)
