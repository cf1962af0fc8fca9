"""The Atari evaluation protocol: env settings, SB3 observation layout, episode counting, epsilon."""

from __future__ import annotations

import types

import numpy as np
import pytest

from dqn2snn_plugin.envs import atari
from dqn2snn_plugin.envs.atari import EpisodeResult, check_action_count, make_env, play
from dqn2snn_plugin.errors import ConfigError, EnvIdError, ObservationError

BREAKOUT = "BreakoutNoFrameskip-v4"


def noop_policy(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs), dtype=np.int64)


@pytest.mark.parametrize("env_id, message", [
    ("Breakout-v4", "BreakoutNoFrameskip-v4"), ("NoSuchGameNoFrameskip-v4", "BreakoutNoFrameskip-v4"),
    ("NoSuchTask-v0", "BreakoutNoFrameskip-v4"), ("ALE/Breakout-v5", "v5 id.*env_version=v5"),
])
def test_unknown_env_ids_are_refused_before_any_work(env_id, message, monkeypatch):
    monkeypatch.setattr(atari, "AtariVectorEnv", None)  # building an env would crash with a TypeError
    with pytest.raises(EnvIdError, match=message):
        make_env(env_id, 2)
    with pytest.raises(EnvIdError, match=message):
        play(noop_policy, env_id, 1)


def test_action_count_check():
    check_action_count(BREAKOUT, 4)
    check_action_count("PongNoFrameskip-v4", 6)
    with pytest.raises(EnvIdError, match="6 actions.*has 4"):
        check_action_count(BREAKOUT, 6)


def test_observations_are_sb3_cnn_batches_and_seeded():
    def rollout(seed: int) -> np.ndarray:
        env = make_env(BREAKOUT, 3, seed=seed)
        obs, _ = env.reset(seed=seed)
        frames = [obs]
        for action in [1, 2, 3, 0, 2, 2]:
            obs, *_ = env.step(np.full(3, action))
            frames.append(obs)
        return np.stack(frames)

    first, again, other = rollout(7), rollout(7), rollout(8)
    assert first.shape == (7, 3, 4, 84, 84) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)  # other no-op starts
    assert not first[0, :, :3].any() and first[0, :, 3].any()  # zeros before an episode's first frame


def _area_resize(frame: np.ndarray, size: tuple[int, int], interpolation: object = None) -> np.ndarray:
    """OpenCV's INTER_AREA resize in numpy (the venv has no cv2); rows/cols averaged by overlap."""

    def overlap(n_in: int, n_out: int) -> np.ndarray:
        scale, weights = n_in / n_out, np.zeros((n_out, n_in))
        for i in range(n_out):
            lo, hi = i * scale, (i + 1) * scale
            for j in range(int(np.floor(lo)), int(np.ceil(hi))):
                weights[i, j] = min(hi, j + 1) - max(lo, j)
        return weights / scale

    width, height = size
    out = overlap(frame.shape[0], height) @ frame.astype(float) @ overlap(frame.shape[1], width).T
    return np.round(out).astype(np.uint8)


def test_frame_stack_matches_sb3_vecframestack_and_transpose(monkeypatch):
    """Same game, seed and actions through SB3's make_atari_env + VecFrameStack(4) + VecTransposeImage.

    Freeway has no FIRE (so no fire-reset differences); no-op starts are off on both sides so the
    frames line up. SB3 reads ALE's own gray screen and resizes with INTER_AREA (shimmed), so the
    stacks must agree up to a few rounding pixels, while any other frame order would not.
    """
    import stable_baselines3.common.atari_wrappers as sb3_wrappers
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    fake_cv2 = types.SimpleNamespace(cvtColor=lambda frame, code: frame, resize=_area_resize,
                                     COLOR_RGB2GRAY=None, INTER_AREA=None)
    monkeypatch.setattr(sb3_wrappers, "cv2", fake_cv2)
    env_id = "FreewayNoFrameskip-v4"
    sb3 = VecTransposeImage(VecFrameStack(make_atari_env(
        env_id, n_envs=2, seed=0, env_kwargs={"obs_type": "grayscale"},
        wrapper_kwargs={"noop_max": 0, "terminal_on_life_loss": False, "clip_reward": False}), 4))
    ours = make_env(env_id, 2, noop_max=0)
    expected, _ = sb3.reset(), ours.reset(seed=0)
    for step in range(10):
        actions = np.array([1, step % 3])
        expected, *_ = sb3.step(actions)
        got, *_ = ours.step(actions)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        same_order = (got != expected).mean()
        assert same_order < 0.002
        if step >= 3:  # stacks full of real frames: reversed or shifted orders differ clearly
            assert (got[:, ::-1] != expected).mean() > 5 * same_order + 0.001
            assert (got[:, 1:] != expected[:, :-1]).mean() > 5 * same_order + 0.001


def test_play_counts_exactly_the_assigned_episodes():
    batch_sizes: list[int] = []
    results = play(noop_policy, BREAKOUT, 3, n_envs=2, epsilon=0.0, max_steps=20,
                   on_step=lambda obs, greedy, taken: batch_sizes.append(len(obs)))
    # env 0 plays two episodes and env 1 one, each cut at 20 steps; env 1 then leaves the batch
    assert results == [EpisodeResult(0.0, 20, True)] * 3
    assert batch_sizes == [2] * 20 + [1] * 20


def test_play_is_repeatable_and_seed_dependent():
    def run(seed: int) -> list[EpisodeResult]:
        return play(noop_policy, BREAKOUT, 4, n_envs=4, epsilon=0.5, seed=seed, max_steps=150)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_whole_games_not_single_lives():
    env = make_env(BREAKOUT, 1, seed=0)
    lives = []
    for _ in range(2000):  # FIRE, then stay: the ball is lost again and again
        _, _, terminated, truncated, info = env.step(np.array([1]))
        if terminated[0] or truncated[0]:
            break
        lives.append(int(info["lives"][0]))
    assert terminated[0] and lives[0] == 5 and min(lives) == 1


@pytest.mark.parametrize("epsilon", [0.0, 0.5, 1.0])
def test_epsilon_greedy_explores_at_the_requested_rate(epsilon):
    greedy_seen, taken_seen = [], []

    def hook(obs, greedy, taken):
        greedy_seen.append(greedy)
        taken_seen.append(taken)

    play(noop_policy, BREAKOUT, 4, n_envs=4, epsilon=epsilon, seed=1, max_steps=100, on_step=hook)
    greedy, taken = np.concatenate(greedy_seen), np.concatenate(taken_seen)
    assert len(taken) == 400 and not greedy.any()
    # a random action differs from the greedy one 3 times out of 4 (Breakout has 4 actions)
    assert (taken != greedy).mean() == pytest.approx(0.75 * epsilon, abs=0.06)
    if epsilon == 1.0:
        assert set(np.unique(taken)) == {0, 1, 2, 3}


def test_on_step_can_stop_a_run_and_bad_policies_are_refused():
    steps = []
    results = play(noop_policy, BREAKOUT, None, n_envs=2, on_step=lambda *args: steps.append(1) or len(steps) == 5)
    assert (results, len(steps)) == ([], 5)
    with pytest.raises(ConfigError):
        play(noop_policy, BREAKOUT, None)
    with pytest.raises(ObservationError, match=r"\(3,\)"):
        play(lambda obs: np.zeros(3), BREAKOUT, 2, n_envs=2)


def test_scores_are_raw_not_clipped():
    # Atlantis pays 100+ points per hit: a clipped score could never exceed the number of steps
    results = play(noop_policy, "AtlantisNoFrameskip-v4", 2, n_envs=2, epsilon=1.0, max_steps=150)
    assert all(r.truncated and r.length == 150 for r in results)
    assert max(r.score for r in results) > 150
