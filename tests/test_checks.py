"""The entry checks every network passes (`dqn2snn_plugin.io.checks`): each bad value is refused in one line
naming the field, shapes are worked out without memory, and good networks pass with hand-computed shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin.errors import CheckpointError, ConfigError, NirError
from dqn2snn_plugin.io import checks
from dqn2snn_plugin.normalization import LayerScales


def nature_cnn(n_actions: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(), nn.Conv2d(64, 64, 3, 1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, n_actions))


def test_shapes_are_those_counted_by_hand_and_nothing_is_allocated():
    # (84 - 8) / 4 + 1 = 20, (20 - 4) / 2 + 1 = 9, 9 - 3 + 1 = 7, 64 * 7 * 7 = 3136
    shapes = checks.activation_shapes(nature_cnn(), (4, 84, 84), "net", CheckpointError)
    assert shapes == [(32, 20, 20), (32, 20, 20), (64, 9, 9), (64, 9, 9), (64, 7, 7), (64, 7, 7), (3136,), (512,),
                      (512,), (4,)]
    assert checks.check_shapes(nature_cnn(6), [4, 84, 84], 6, "net", CheckpointError) == 6
    # 10,000 x 10,000 inputs into a 1x1 convolution with 256 channels: 2.56e10 values, refused on the meta device
    wide = nn.Sequential(nn.Conv2d(1, 256, 1), nn.ReLU(), nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(CheckpointError, match=r"^f\.pt: one observation of shape \(1, 10000, 10000\) puts more than"):
        checks.check_shapes(wide, (1, 10000, 10000), 2, "f.pt", CheckpointError)


@pytest.mark.parametrize("shape, n_actions, message", [
    ((5,), 4, r"observation shape \(5,\) \(layer 0, Linear: "),
    ((6,), 3, r"the network has 4 outputs but the action space has 3 actions"),
    ((6,), True, r"4 outputs but the action space has True actions"),
    ((6, 100000, 100000), 4, r"observation shape \(6, 100000, 100000\) holds more than"),
    ("abc", 4, r"observation shape 'abc' is not one to three positive integers"),
    ([6, 0], 4, r"is not one to three positive integers"),
])
def test_networks_that_do_not_fit_their_observations_or_actions_are_named(shape, n_actions, message):
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(NirError, match=rf"^g\.nir: .*{message}"):
        checks.check_shapes(net, shape, n_actions, "g.nir", NirError)


@pytest.mark.parametrize("value, message", [
    (torch.tensor([1, 2]), "holds int64 values: expected float32 or float64"),
    (np.ones(2, dtype=np.float16), "holds float16 values"),
    (torch.tensor([1.0, float("nan")]), "holds NaN or infinite values"),
    (torch.tensor([float("inf")]), "holds NaN or infinite values"),
    (np.array(["a"]), "is not an array of numbers"),
    (torch.ones(2, 2), r"has shape \(2, 2\): expected 1 dimensions"),
])
def test_tensors_must_be_finite_floats_of_the_expected_rank(value, message):
    with pytest.raises(CheckpointError, match=rf"^f\.pt: w {message}"):
        checks.check_tensor(value, "w", "f.pt", CheckpointError, ndim=1)
    assert checks.check_tensor(np.ones(3), "w", "f.pt", CheckpointError, ndim=1).dtype == torch.float64


def scales(hidden, output=1.0, **changes) -> LayerScales:
    return LayerScales(tuple(torch.as_tensor(h, dtype=torch.float32) for h in hidden), output, 99.9, "nonzero",
                       False, 10, **changes)


@pytest.mark.parametrize("bad, message", [
    (scales([float("nan"), 1.0]), r"scales.hidden\[0\] holds NaN or infinite values"),
    (scales([1.0, float("inf")]), r"scales.hidden\[1\] holds NaN or infinite values"),
    (scales([0.0, 1.0]), r"scales.hidden\[0\] holds a scale <= 0"),
    (scales([1.0, [1.0, -2.0, 1.0]]), r"scales.hidden\[1\] holds a scale <= 0"),
    (scales([1.0, [1.0, 1.0]]), r"scales.hidden\[1\] has shape \(2,\): expected one value or one per channel \(3\)"),
    (scales([1.0]), "the scales are for 1 spiking layers, the network has 2"),
    (scales([1.0, 1.0], float("nan")), "scales.output is nan: expected a positive finite number"),
    (scales([1.0, 1.0], 0.0), "scales.output is 0.0"),
    (scales([1.0, 1.0], state_trim=80.0), r"scales.state_trim must be a percentage of states in \[0, 50\)"),
])
def test_scales_must_be_finite_positive_and_fit_the_layers(bad, message):
    with pytest.raises(CheckpointError, match=rf"^s\.pt: {message}"):
        checks.check_scales(bad, [5, 3], "s.pt", CheckpointError)
    checks.check_scales(scales([1.0, [1.0, 2.0, 3.0]]), [5, 3], "s.pt", CheckpointError)


@pytest.mark.parametrize("T, readout, v_init, message", [
    (0, "spikes", 0.0, "T .* must be a positive integer, got 0"),
    (-1, "spikes", 0.0, "must be a positive integer, got -1"),
    (2.7, "spikes", 0.0, "must be a positive integer, got 2.7"),
    ("abc", "spikes", 0.0, "must be a positive integer, got 'abc'"),
    (200_000, "spikes", 0.0, "T = 200000 time steps per decision is beyond any use"),
    (8, "bogus", 0.0, "readout 'bogus' is not one of"),
    (8, "spikes", float("nan"), r"initial membrane v_init nan must be a number in \[0, 1\)"),
    (8, "spikes", 1.0, r"v_init 1.0 must be a number in \[0, 1\)"),
    (8, "spikes", "0.5", r"v_init '0.5' must be"),
])
def test_run_options_out_of_range_are_refused(T, readout, v_init, message):
    with pytest.raises(NirError, match=rf"^g\.nir: .*{message}"):
        checks.check_run_options("g.nir", NirError, T=T, readout=readout, v_init=v_init)
    assert checks.check_run_options("g.nir", NirError, T=8, readout="spikes", v_init=0.5) == (8, "spikes", 0.5)


def test_parameters_of_a_network_are_checked_by_name():
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    checks.check_parameters(net, "net", CheckpointError)
    with torch.no_grad():
        net[2].bias[1] = math.nan
    with pytest.raises(CheckpointError, match=r"^net: 2\.bias holds NaN or infinite values$"):
        checks.check_parameters(net, "net", CheckpointError)


def test_devices_are_checked_before_anything_is_loaded(monkeypatch):
    assert checks.check_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        checks.check_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' was asked for but no CUDA GPU is available"):
        checks.check_device("cuda")


def test_an_allocation_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(checks, "memory_bytes", lambda: 2**30)
    checks.check_allocation(2**30, "this", ConfigError)
    with pytest.raises(ConfigError, match=r"^this needs about 2\.0 GiB of memory, more than this machine's 1\.0 GiB$"):
        checks.check_allocation(2**31, "this", ConfigError)


def test_spiking_channels_are_the_synapses_before_each_relu():
    assert checks.spiking_channels(nature_cnn()) == [32, 64, 64, 512]
