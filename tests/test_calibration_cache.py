"""The calibration cache under hostile conditions: a poisoned file is named and replaced, a cache that
cannot be written costs a warning, never the frames just played."""

from __future__ import annotations

import numpy as np
import pytest

from dqn2snn_plugin import calibration
from dqn2snn_plugin.checkpoint import load_dqn
from conftest import ATARI_FIXTURES

QNET = ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt"


@pytest.fixture
def played(monkeypatch):
    """Frames "played" without playing: ones, in Atari's uint8."""
    def play_frames(checkpoint, n_frames, *args):
        return np.ones((n_frames, *checkpoint.observation_shape), dtype=np.uint8)

    monkeypatch.setattr(calibration, "_play_frames", play_frames)


def test_a_poisoned_cache_file_is_named_and_collected_again(tmp_path, played):
    checkpoint = load_dqn(QNET)
    first = calibration.collect_observations(checkpoint, 4, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    np.save(path, np.full(first.shape, np.nan, dtype=np.float32))  # the right shape, values no env gives
    with pytest.warns(UserWarning, match=rf"calibration cache {path} cannot be read \(observations hold NaN"):
        again = calibration.collect_observations(checkpoint, 4, cache_dir=tmp_path)
    assert np.array_equal(again, first) and np.array_equal(np.load(path), first)


def test_a_cache_that_cannot_be_written_keeps_the_frames(tmp_path, played):
    (tmp_path / "file").write_text("")
    with pytest.warns(UserWarning, match=r"calibration cache .* not written .*: continuing without it"):
        frames = calibration.collect_observations(load_dqn(QNET), 4, cache_dir=tmp_path / "file" / "cache")
    assert frames.shape == (4, 4, 84, 84)
