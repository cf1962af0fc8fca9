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


def _edited(snn_file, tmp_path, edit) -> "Path":
    """A copy of the saved SNN `snn_file` with `edit(payload)` applied, as a user or a bad disk might."""
    payload = torch.load(snn_file, weights_only=True)
    edit(payload)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(payload):
        target = payload
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value
    return edit


NAN = float("nan")


@pytest.mark.parametrize("edit, message", [
    (_set("scales", "hidden", 0, torch.tensor(NAN)), r"scales.hidden\[0\] holds NaN or infinite values"),
    (_set("scales", "hidden", 1, torch.tensor(float("inf"))), r"scales.hidden\[1\] holds NaN or infinite values"),
    (_set("scales", "hidden", 0, torch.tensor(0.0)), r"scales.hidden\[0\] holds a scale <= 0"),
    (_set("scales", "hidden", 0, torch.tensor(-1.0)), r"scales.hidden\[0\] holds a scale <= 0"),
    (_set("scales", "hidden", 0, torch.ones(5)), r"scales.hidden\[0\] has shape \(5,\): expected one value or one per "
                                                 r"channel \(48\)"),
    (_set("scales", "hidden", lambda h: h[:1]), "the scales are for 1 spiking layers, the network has 2"),
    (_set("scales", "output", NAN), "scales.output is nan"),
    (_set("scales", "output", 0.0), "scales.output is 0.0"),
    (_set("scales", "bogus", 1), "scales hold unknown fields bogus"),
    (_set("checkpoint", "n_actions", 5), "the network has 4 outputs but the action space has 5 actions"),
    (_set("checkpoint", "n_actions", "4"), "field checkpoint.n_actions is '4': expected int"),
    (_set("checkpoint", "observation_shape", [7]), r"observation shape \(7,\)"),
    (_set("checkpoint", "policy", None), "field checkpoint.policy is None: expected str"),
    (_set("checkpoint", "assumptions", [1]), "field checkpoint.assumptions holds something other than text"),
    (_set("layers", 1, "ReLU"), r"layers\[1\] is 'ReLU': expected a layer spec"),
    (_set("checkpoint", "observation_shape", [6, 100000, 100000]), "holds more than"),
    (_set("checkpoint", "observation_shape", "abc"), "observation shape 'abc' is not one to three positive integers"),
    (_set("state_dict", "0.weight", lambda w: w.fill_(NAN)), r"state_dict\['0.weight'\] holds NaN or infinite values"),
    (_set("state_dict", "2.bias", lambda b: b.long()), r"state_dict\['2.bias'\] holds int64 values"),
    (_set("state_dict", "9.weight", torch.ones(2)), r"the state dict holds weights no layer takes \(9.weight\)"),
    (lambda p: p["state_dict"].pop("2.weight"), r"layers\[2\] \(Linear\) has no 2.weight in the state dict"),
    (lambda p: p["state_dict"].pop("2.bias"), r"layers\[2\] says bias=True, the state dict lacks 2.bias"),
    (_set("layers", 0, "in", 2_000_000), r"layers\[0\].in is 2000000 but its weights give 6"),
    (_set("layers", 0, "out", 10**12), r"layers\[0\].out is 1000000000000 but its weights give 48"),
    (_set("layers", 0, "type", "LSTM"), r"layers\[0\] is of unknown type 'LSTM'"),
    (_set("layers", lambda layers: layers[:-1]), "the state dict holds weights no layer takes"),
    (_set("options", "foo", 1), r"unknown option\(s\) foo"),
    (_set("options", "readout", "bogus"), "its saved options cannot be used: unknown readout 'bogus'"),
    (_set("options", "T", 0), "its saved options cannot be used: T .* must be a positive integer, got 0"),
    (_set("options", "input_max", float("inf")), "option input_max is inf"),
    (_set("bias_shifts", 0, torch.zeros(3)), r"bias_shifts\[0\] has 3 values for 48 outputs"),
    (_set("bias_shifts", 2, torch.full((4,), NAN)), r"bias_shifts\[2\] holds NaN or infinite values"),
], ids=lambda value: None if callable(value) else value[:40])
def test_edited_files_are_refused_naming_the_file_and_field(mlp_checkpoint, tmp_path, edit, message):
    """Issues 24.12 and 24.14: every edit is one CheckpointError naming the file, before anything is built
    (a spec of 10**12 outputs, read as it stood, would ask for terabytes)."""
    snn = convert(mlp_checkpoint, torch.randn(100, 6), T=12)
    save_snn(snn, mlp_checkpoint, tmp_path / "snn.pt")
    path = _edited(tmp_path / "snn.pt", tmp_path, edit)
    with pytest.raises(CheckpointError, match=rf"^{path}: .*{message}"):
        load_snn(path)


def test_loading_onto_a_missing_gpu_is_refused(mlp_checkpoint, tmp_path, monkeypatch):
    snn = convert(mlp_checkpoint, torch.randn(100, 6), T=12)
    save_snn(snn, mlp_checkpoint, tmp_path / "snn.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        load_snn(tmp_path / "snn.pt", device="cuda")


@pytest.mark.parametrize("backend", ["spikingjelly", "snntorch"])
def test_bad_hidden_scales_are_refused_on_every_backend(mlp_checkpoint, tmp_path, backend):
    """Issue 24.14: a zero scale once loaded silently on the snnTorch backend (its neurons never read it)."""
    snn = convert(mlp_checkpoint, torch.randn(100, 6), T=12, backend=backend)
    save_snn(snn, mlp_checkpoint, tmp_path / "snn.pt")
    path = _edited(tmp_path / "snn.pt", tmp_path, _set("scales", "hidden", 1, torch.tensor(0.0)))
    with pytest.raises(CheckpointError, match=r"scales.hidden\[1\] holds a scale <= 0"):
        load_snn(path)
