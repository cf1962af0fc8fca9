"""Saving and reloading SNNs: bad paths and bad files are refused in plain words, nothing half-written."""

from __future__ import annotations

import pytest

from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.errors import CheckpointError, ConfigError, ResultsError
from dqn2snn_plugin.store import load_snn, save_snn
from _fixtures import atari_checkpoint


def test_saving_into_a_missing_folder_or_onto_a_folder_is_refused(tmp_path, atari_observations):
    checkpoint = atari_checkpoint()
    snn = convert(checkpoint, atari_observations, T=4)
    with pytest.raises(ResultsError, match="does not exist"):
        save_snn(snn, checkpoint, tmp_path / "missing" / "snn.pt")
    with pytest.raises(ResultsError, match="is a folder"):
        save_snn(snn, checkpoint, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, reason", [(None, "no such file"), (b"", "the file is empty"),
                                             (b"\x80\x02junk" * 20, "not a PyTorch")])
def test_unreadable_snn_files_are_named(tmp_path, content, reason):
    path = tmp_path / "snn.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_snn(path)
    assert "weights_only" not in str(info.value)


def test_convert_without_calibration_or_scales_says_what_it_needs():
    with pytest.raises(ConfigError, match="needs calibration observations"):
        convert(atari_checkpoint(), None)
