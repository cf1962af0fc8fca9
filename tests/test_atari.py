"""The Atari evaluation protocol: env settings, SB3 observation layout, episode counting, epsilon."""

from __future__ import annotations

import types

import numpy as np
import pytest

from dqn2snn_plugin.envs import atari
from dqn2snn_plugin.envs.atari import EpisodeResult, check_action_count, make_env, play
from dqn2snn_plugin.envs.protocol import parse_protocol
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


@pytest.mark.slow
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


@pytest.fixture
def sb3_wrappers(monkeypatch):
    """SB3's atari_wrappers with OpenCV's gray conversion and INTER_AREA resize shimmed (no cv2 here)."""
    import stable_baselines3.common.atari_wrappers as sb3_wrappers

    fake_cv2 = types.SimpleNamespace(cvtColor=lambda frame, code: frame, resize=_area_resize,
                                     COLOR_RGB2GRAY=None, INTER_AREA=None)
    monkeypatch.setattr(sb3_wrappers, "cv2", fake_cv2)
    return sb3_wrappers


def test_frame_stack_matches_sb3_vecframestack_and_transpose(sb3_wrappers):
    """Same game, seed and actions through SB3's make_atari_env + VecFrameStack(4) + VecTransposeImage.

    Freeway has no FIRE (so no fire-reset differences); no-op starts are off on both sides so the
    frames line up. SB3 reads ALE's own gray screen and resizes with INTER_AREA (shimmed), so the
    stacks must agree up to a few rounding pixels, while any other frame order would not.
    """
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

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


def _sb3_reference(sb3_wrappers, preset: str):
    """(reset, step) of the reference stack for a preset on one Breakout env without no-op starts:
    `sb3` is RL-Zoo's AtariWrapper + VecFrameStack(4); `cleanrl` is the same SB3 wrappers (CleanRL's
    dqn_atari.py imports them) under gymnasium's FrameStackObservation(4), which pads with the first frame."""
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    if preset == "sb3":
        env = VecTransposeImage(VecFrameStack(make_atari_env(
            BREAKOUT, n_envs=1, seed=0, env_kwargs={"obs_type": "grayscale"},
            wrapper_kwargs={"noop_max": 0, "clip_reward": False}), 4))
        return env.reset, lambda action: env.step(np.array([action]))[0]
    single = gym.wrappers.FrameStackObservation(sb3_wrappers.AtariWrapper(
        gym.make(BREAKOUT, obs_type="grayscale"), noop_max=0, clip_reward=False), 4)

    def reset():
        return single.reset(seed=0)[0][None, ..., 0]

    def step(action):
        obs, _, terminated, truncated, _ = single.step(action)
        return reset() if terminated or truncated else obs[None, ..., 0]

    return reset, step


@pytest.mark.parametrize("preset", ["sb3", "cleanrl"])
def test_sb3_and_cleanrl_presets_match_their_reference_wrappers_through_lost_lives(sb3_wrappers, preset):
    """Breakout has FIRE and 5 lives: the FIRE sequence after each reset, the restart of the stack (zeros
    for SB3, first-frame copies for CleanRL) at each lost life and the game over must all line up with
    the agent's observations; the forced NOOP/FIRE steps are not decisions."""
    reset, step = _sb3_reference(sb3_wrappers, preset)
    ours = make_env(BREAKOUT, 1, protocol=f"{preset},noop_max=0")
    obs, info = ours.reset(seed=0)
    forced, lives_seen = 0, set()

    def decision(obs, info):
        nonlocal forced
        while not info["decision"][0]:
            obs, _, terminated, _, info = ours.step(np.array([3]))  # overridden by the forced action
            forced += 1
            assert not terminated[0] or info["lives"][0] == 5
        lives_seen.add(int(info["lives"][0]))
        return obs, info

    def same(got: np.ndarray, expected: np.ndarray) -> None:
        # equal up to a few INTER_AREA rounding pixels (see above); blank slots exactly where SB3 has them
        assert (got != expected).mean() < 0.002
        assert np.array_equal(got.reshape(4, -1).any(axis=1), expected.reshape(4, -1).any(axis=1))
        for k in range(3):  # a copied slot copies exactly
            assert np.array_equal(got[0, k], got[0, k + 1]) == np.array_equal(expected[0, k], expected[0, k + 1])

    obs, info = decision(obs, info)
    same(obs, reset())
    rng = np.random.default_rng(0)
    for _ in range(120):  # 5 lives lost (about 23 steps each) and the next game started
        action = int(rng.choice([1, 1, 2, 3]))
        expected = step(action)
        obs, _, _, _, info = ours.step(np.array([action]))
        obs, info = decision(obs, info)
        same(obs, expected)
    assert lives_seen == {1, 2, 3, 4, 5}
    assert forced == 2 + 4 * 3 + 2  # FIRE, 2 at each start; NOOP, FIRE, 2 after each of 4 lives lost


def test_ale_v5_preset_matches_gymnasiums_atari_preprocessing_on_the_full_action_set(monkeypatch):
    """`ALE/Breakout-v5` through gymnasium's own AtariPreprocessing (frame skip 4 with max-pool, INTER_AREA
    resize, shimmed) and FrameStackObservation(4, zero padding), 18 actions: the same frames as the
    preset's, with sticky actions off on both sides (their random streams differ)."""
    import sys

    import gymnasium as gym

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(resize=_area_resize, INTER_AREA=None))
    reference = gym.wrappers.FrameStackObservation(gym.wrappers.AtariPreprocessing(
        gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=True),
        noop_max=0, frame_skip=4), 4, padding_type="zero")
    ours = make_env("ALE/Breakout-v5", 1, protocol="ale-v5,sticky_actions=0")
    expected, got = reference.reset(seed=0)[0], ours.reset(seed=0)[0][0]
    rng = np.random.default_rng(0)
    for step in range(40):
        assert (got != expected).mean() < 0.002
        assert np.array_equal(got.reshape(4, -1).any(axis=1), expected.reshape(4, -1).any(axis=1))
        action = int(rng.integers(18))
        expected, got = reference.step(action)[0], ours.step(np.array([action]))[0][0]


def test_copy_fill_repeats_the_first_frame_where_zero_fill_has_zeros():
    zero = make_env(BREAKOUT, 2, protocol="paper,noop_max=0")
    copy = make_env(BREAKOUT, 2, protocol="paper,noop_max=0,stack_fill=copy")
    for step in range(6):
        if step == 0:
            (z, _), (c, _) = zero.reset(seed=1), copy.reset(seed=1)
        else:
            z, c = zero.step(np.array([1, 2]))[0], copy.step(np.array([1, 2]))[0]
        first = max(0, 3 - step)  # stack slots before the episode's first frame
        assert np.array_equal(c[:, first:], z[:, first:])
        assert not z[:, :first].any()
        assert all(np.array_equal(c[:, k], z[:, first]) for k in range(first))


def test_protocol_fields_reach_the_emulator():
    def frames(protocol: str) -> np.ndarray:
        env = make_env(BREAKOUT, 1, seed=0, protocol=protocol)
        return np.stack([env.step(np.array([1]))[0] for _ in range(12)])

    paper = frames("paper,noop_max=0")
    assert not np.array_equal(paper, frames("paper,noop_max=0,max_pool=false"))
    assert not np.array_equal(paper, frames("paper,noop_max=0,frame_skip=3"))
    assert np.array_equal(paper, frames("paper,noop_max=0"))
    assert atari.game_action_count(BREAKOUT, parse_protocol("paper,action_set=full")) == 18
    assert make_env("ALE/Breakout-v5", 1, protocol="ale-v5").single_action_space.n == 18
    check_action_count("ALE/Pong-v5", 6, "ale-v5,action_set=minimal")


def test_play_under_a_protocol_validates_it_first(monkeypatch):
    monkeypatch.setattr(atari, "AtariVectorEnv", None)  # nothing may be built before the checks
    for protocol, error in [("paper,noop_max=-3", ConfigError), ("minatar", ConfigError), (42, ConfigError),
                            ("ale-v5", EnvIdError)]:
        with pytest.raises(error):
            play(noop_policy, BREAKOUT, 1, protocol=protocol)
    with pytest.raises(ConfigError, match="takes no protocol"):
        play(noop_policy, "CartPole-v1", 1, protocol="paper")


def test_sb3_protocol_scores_whole_games_through_lost_lives():
    results = play(lambda obs: np.ones(len(obs), dtype=np.int64), BREAKOUT, 2, n_envs=2, epsilon=0.0,
                   protocol="sb3", max_steps=2000)
    # FIRE only: the ball is lost again and again; each episode is a whole game of 5 lives (~23 steps each)
    assert all(not r.truncated and 5 * 20 < r.length < 5 * 40 for r in results)


def test_play_counts_exactly_the_assigned_episodes():
    batch_sizes: list[int] = []
    results = play(noop_policy, BREAKOUT, 3, n_envs=2, epsilon=0.0, max_steps=20,
                   on_step=lambda obs, greedy, taken: batch_sizes.append(len(obs)))
    # env 0 plays two episodes and env 1 one, each cut at 20 steps; env 1 then leaves the batch
    assert results == [EpisodeResult(0.0, 20, True)] * 3
    assert batch_sizes == [2] * 20 + [1] * 20


@pytest.mark.slow
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
