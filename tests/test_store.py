"""Saved SNNs: every backend and input coding reloads to the same outputs, files of earlier versions too;
anything else is refused without running code stored in it."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from dqn2snn_plugin import convert
from dqn2snn_plugin.errors import CheckpointError, ConfigError, ResultsError
from dqn2snn_plugin.io.store import FORMAT, load_snn, save_snn

from conftest import MarkerPayload, atari_checkpoint


@pytest.mark.parametrize("options", [
    {"backend": "snntorch"},
    {"backend": "snntorch", "initial_membrane": "half", "readout": "spikes"},
    {"input_coding": "poisson", "input_max": 1.5},
    {"backend": "snntorch", "input_coding": "poisson", "input_max": 1.5},
], ids=["snntorch", "snntorch-half-spikes", "poisson", "snntorch-poisson"])
def test_saved_snn_reloads_with_its_backend_and_coding(mlp_checkpoint, tmp_path, options):
    states = torch.randn(100, 6)
    snn = convert(mlp_checkpoint, states, T=12, **options)
    save_snn(snn, mlp_checkpoint, tmp_path / "snn.pt")
    again, _ = load_snn(tmp_path / "snn.pt")
    assert (again.backend.name, again.input_coding, again.input_max, again.readout, again.initial_membrane) == (
        snn.backend.name, snn.input_coding, snn.input_max, snn.readout, snn.initial_membrane)
    # both start from the same seeded generator, so even the Poisson spike trains are the same
    first, second = snn.readouts(states[:20]), again.readouts(states[:20])
    for name, values in first.items():
        assert torch.equal(values, second[name]), name
    assert [s.tolist() for s in snn.last_stats.spikes] == [s.tolist() for s in again.last_stats.spikes]


def test_files_that_are_not_saved_snns_are_refused(mlp_checkpoint, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file at all")
    weights = tmp_path / "weights.pt"
    torch.save(mlp_checkpoint.q_network.state_dict(), weights)  # a real torch file, but a DQN's weights
    other = tmp_path / "other.pt"
    torch.save({"format": "someone-else-v3", "layers": []}, other)
    for path in (garbage, weights, other, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError, match=rf"{path.name}: not a saved dqn2snn SNN"):
            load_snn(path)


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pickle_payload_is_refused_and_never_run(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "layers": MarkerPayload(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a saved dqn2snn SNN"):
        load_snn(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(MarkerPayload(marker)))  # the payload is live: plain unpickling runs it
    assert marker.exists()


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


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["rate_tuned", "binary", "snntorch_half"])
def test_files_saved_before_the_network_engine_split_still_load_to_the_same_outputs(name):
    """Written by the code at 0ed19b0 (`tests/data/make_old_snn.py`): a rate SNN with calibrated biases, a
    binary one, an snnTorch one; reloaded, each gives the readouts recorded then, bit for bit."""
    recorded = torch.load(DATA / "old_snn_readouts.pt", weights_only=True)
    snn, _ = load_snn(DATA / f"old_snn_{name}.pt")
    readouts = snn.readouts(recorded["probe"])
    assert readouts.keys() == recorded[name].keys()
    for readout, values in readouts.items():
        assert torch.equal(values, recorded[name][readout]), readout


def test_what_was_assumed_at_loading_and_the_scales_trim_survive_a_save(tmp_path):
    """The reloaded SNN still says how raw observations were scaled, what was assumed, and how its scales
    were taken (the share of states trimmed)."""
    import dataclasses

    checkpoint = dataclasses.replace(atari_checkpoint(), input_scaling="x 1/255 (test)", assumptions=("a ReLU",))
    states = torch.randint(0, 256, (40, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    snn = convert(checkpoint, states, T=8)
    assert snn.scales.state_trim == 2.0
    save_snn(snn, checkpoint, tmp_path / "snn.pt")
    again, reloaded = load_snn(tmp_path / "snn.pt")
    assert (reloaded.input_scaling, reloaded.assumptions) == ("x 1/255 (test)", ("a ReLU",))
    assert again.scales.state_trim == 2.0
