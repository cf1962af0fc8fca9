"""Calibration observations: the DQN's own play, the on-disk cache, and input checking."""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch

from dqn2snn_plugin import calibration
from dqn2snn_plugin.envs.atari import make_env
from dqn2snn_plugin.calibration import calibration_and_test_observations, collect_observations
from dqn2snn_plugin.observations import as_observation_array
from dqn2snn_plugin.errors import CalibrationError, ConfigError, EnvIdError

from conftest import atari_checkpoint, tiny_checkpoint


def refuse_to_play(*args, **kwargs):
    raise AssertionError("played although the cache should have answered")


@pytest.mark.slow
def test_collects_the_states_the_dqn_acts_on_and_caches_them(tmp_path, monkeypatch):
    dqn = atari_checkpoint("BreakoutNoFrameskip-v4")
    frames = collect_observations(dqn, 20, n_envs=8, seed=5, cache_dir=tmp_path)
    assert frames.shape == (20, 4, 84, 84) and frames.dtype == np.uint8
    first, _ = make_env(dqn.env_id, 8, seed=5).reset(seed=5)
    assert np.array_equal(frames[:8], first)  # step 1 of env 0..7, then step 2, ...
    assert not np.array_equal(frames[8:16], first)
    assert [p.suffix for p in tmp_path.iterdir()] == [".npy"]
    umask = os.umask(0)
    os.umask(umask)
    assert next(tmp_path.iterdir()).stat().st_mode & 0o777 == 0o666 & ~umask  # the one atomic writer's mode, not 0600

    monkeypatch.setattr(calibration, "play", refuse_to_play)
    assert np.array_equal(collect_observations(dqn, 20, n_envs=8, seed=5, cache_dir=tmp_path), frames)
    for changed in [{"seed": 6}, {"epsilon": 0.1}, {"n_envs": 4}]:  # other settings: other frames
        with pytest.raises(AssertionError, match="played"):
            collect_observations(dqn, 20, **{"n_envs": 8, "seed": 5, **changed}, cache_dir=tmp_path)


def test_cache_key_follows_the_weights_and_settings():
    dqn = atari_checkpoint("BreakoutNoFrameskip-v4")
    same, nudged = copy.deepcopy(dqn.q_network), copy.deepcopy(dqn.q_network)
    with torch.no_grad():
        nudged[-1].bias[0] += 1e-4
    key = calibration._cache_key
    assert key(dqn, seed=0) == key(dataclasses.replace(dqn, q_network=same), seed=0)
    assert key(dqn, seed=0) != key(dataclasses.replace(dqn, q_network=nudged), seed=0)
    assert key(dqn, seed=0) != key(dqn, seed=1)


@pytest.mark.slow
def test_cache_write_is_atomic(tmp_path, monkeypatch):
    dqn = atari_checkpoint("BreakoutNoFrameskip-v4")

    def crash_midway(handle, array):
        handle.write(b"\x93NUMPY half a file")
        raise OSError("disk full")

    monkeypatch.setattr(calibration.np, "save", crash_midway)
    with pytest.warns(UserWarning, match="disk full"):  # the frames are returned, the cache is not written
        collect_observations(dqn, 8, n_envs=8, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither a truncated .npy nor a stray temp file
    monkeypatch.undo()
    collect_observations(dqn, 8, n_envs=8, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1


@pytest.mark.slow
def test_use_cache_false_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path))
    assert calibration.default_cache_dir() == tmp_path
    collect_observations(atari_checkpoint("BreakoutNoFrameskip-v4"), 8, use_cache=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_calibration_and_test_states_come_from_separate_episodes(tmp_path, monkeypatch):
    seeds = []

    def spy(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return real_play(*args, **kwargs)

    real_play = calibration.play
    monkeypatch.setattr(calibration, "play", spy)
    dqn = atari_checkpoint("BreakoutNoFrameskip-v4")
    calib, test = calibration_and_test_observations(dqn, 24, 16, n_envs=8, cache_dir=tmp_path)
    assert calib.shape == (24, 4, 84, 84) and test.shape == (16, 4, 84, 84)
    # env i of a run is seeded seed + i: the two runs start their episodes from disjoint env seeds
    assert len(seeds) == 2 and abs(seeds[1] - seeds[0]) >= 8
    assert not np.array_equal(calib[8:16], test[8:16])


def test_checkpoint_without_a_usable_env_is_refused(tmp_path):
    dqn = atari_checkpoint("BreakoutNoFrameskip-v4")
    with pytest.raises(CalibrationError, match="env_id"):
        collect_observations(dataclasses.replace(dqn, env_id=None), 8, cache_dir=tmp_path)
    with pytest.raises(EnvIdError, match="4 actions but PongNoFrameskip-v4 has 6"):
        collect_observations(dataclasses.replace(dqn, env_id="PongNoFrameskip-v4"), 8, cache_dir=tmp_path)
    with pytest.raises(ConfigError):
        collect_observations(dqn, 0, cache_dir=tmp_path)


def test_as_observation_array_accepts_arrays_tensors_and_iterables():
    shape = (2, 3)
    single = np.ones(shape, dtype=np.uint8)
    batch = torch.zeros(4, *shape, dtype=torch.uint8)
    assert as_observation_array(single, shape).shape == (1, 2, 3)
    assert as_observation_array(batch, shape).dtype == torch.uint8
    mixed = as_observation_array([single, batch, np.full((2, *shape), 7, np.uint8)], shape)
    assert mixed.shape == (7, 2, 3) and mixed[0].eq(1).all() and mixed[-1].eq(7).all()
    generated = as_observation_array((np.zeros(shape) for _ in range(3)), shape)
    assert generated.shape == (3, 2, 3)


@pytest.mark.parametrize("data", [[], np.zeros((0, 2, 3)), iter([])])
def test_empty_observation_sets_are_refused(data):
    with pytest.raises(CalibrationError, match="empty"):
        as_observation_array(data, (2, 3))


@pytest.mark.parametrize("data", [np.zeros((4, 3, 2)), np.zeros(6), [np.zeros((2, 3)), np.zeros((1, 2, 2))]])
def test_wrong_shapes_are_refused_with_both_shapes_named(data):
    with pytest.raises(CalibrationError, match=r"expected \(2, 3\)") as error:
        as_observation_array(data, (2, 3))
    assert str(tuple(np.shape(data[-1] if isinstance(data, list) else data))) in str(error.value)


def test_vector_checkpoint_shapes():
    dqn = tiny_checkpoint(torch.eye(3))
    assert as_observation_array([[1.0, 2.0, 3.0]], dqn.observation_shape).shape == (1, 3)


def test_a_damaged_cache_file_is_collected_again(fixtures_dir, tmp_path):
    import warnings as _warnings

    from dqn2snn_plugin.calibration import collect_observations
    from dqn2snn_plugin.checkpoint import load_dqn

    checkpoint = load_dqn(fixtures_dir / "sb3-zoo" / "classic" / "CartPole-v1.zip")
    frames = collect_observations(checkpoint, 50, n_envs=2, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("CartPole-v1-*.npy")
    for damage in (b"", b"garbage" * 10, cached.read_bytes()[:100]):
        cached.write_bytes(damage)
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            again = collect_observations(checkpoint, 50, n_envs=2, cache_dir=tmp_path)
        assert any(str(cached) in str(w.message) and "collecting the frames again" in str(w.message) for w in caught)
        assert (again == frames).all() and (np.load(cached) == frames).all()


def test_bool_planes_are_read_as_0_1_but_refused_for_screen_frames():
    planes = np.zeros((3, 10, 10, 4), dtype=bool)
    planes[0, 2, 3, 1] = True
    batch = as_observation_array(planes, (10, 10, 4))
    assert batch.dtype == torch.uint8 and int(batch.sum()) == 1 and batch[0, 2, 3, 1] == 1
    with pytest.raises(CalibrationError, match="must be numbers.*torch.bool"):
        as_observation_array(np.zeros((2, 4, 84, 84), dtype=bool), (4, 84, 84))


@pytest.mark.slow
def test_a_protocol_is_checked_before_any_play_and_keys_the_cache(tmp_path, monkeypatch):
    dqn = atari_checkpoint("BreakoutNoFrameskip-v4")
    monkeypatch.setattr(calibration, "play", refuse_to_play)
    for bad in ("paper,noop_max=-1", "minatar", "ale-v5"):  # range, family, and a v4 id under a v5 protocol
        with pytest.raises((ConfigError, EnvIdError)):
            collect_observations(dqn, 8, n_envs=8, cache_dir=tmp_path, protocol=bad)
    monkeypatch.undo()
    paper = collect_observations(dqn, 8, n_envs=8, cache_dir=tmp_path)
    copy = collect_observations(dqn, 8, n_envs=8, cache_dir=tmp_path, protocol="paper,stack_fill=copy")
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.array_equal(paper, copy)
    assert np.array_equal(copy[:, 3], paper[:, 3]) and np.array_equal(copy[:, 0], paper[:, 3])  # first states
