"""convert() on the real Atari fixtures: backend parity, SpikingJelly's own graph, the negative-Q game."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin import convert
from dqn2snn_plugin.calibration import collect_observations
from dqn2snn_plugin.errors import CalibrationError, ConfigError, UnsupportedLayerError

from conftest import atari_checkpoint

GAMES = ["Breakout", "Pong", "Boxing", "Atlantis", "RoadRunner", "BeamRider"]


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    """Per game: (checkpoint, 400 calibration states, 200 test states from other episodes)."""
    cache = tmp_path_factory.mktemp("frames")
    found = {}

    def get(game: str):
        if game not in found:
            ckpt = atari_checkpoint(f"{game}NoFrameskip-v4")
            calibration = collect_observations(ckpt, 400, seed=0, n_envs=4, cache_dir=cache)
            test = collect_observations(ckpt, 200, seed=1000, n_envs=4, cache_dir=cache)
            found[game] = ckpt, calibration, test
        return found[game]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("game", GAMES)
def test_backends_agree_on_actions_and_spike_counts(states, game):
    """In float64 both backends give the same spikes in every layer; in float32 they differ only by
    rounding order (snnTorch subtracts the reset one step later), which flips a few near-tied states."""
    ckpt, calibration, test = states(game)
    sj = convert(ckpt, calibration, backend="spikingjelly")
    snt = convert(ckpt, calibration, backend="snntorch", scales=sj.scales)
    assert (sj.act(test, T=64) == snt.act(test, T=64)).float().mean() >= 0.99
    for layer_sj, layer_snt in zip(sj.last_stats.spikes, snt.last_stats.spikes):
        np.testing.assert_allclose(layer_snt.numpy(), layer_sj.numpy(), rtol=2e-3, atol=2)
    sj.double(), snt.double()
    assert (sj.act(test, T=64) == snt.act(test, T=64)).float().mean() >= 0.999
    for layer_sj, layer_snt in zip(sj.last_stats.spikes, snt.last_stats.spikes):
        assert torch.equal(layer_sj, layer_snt)


def test_spikingjelly_kernels_give_identical_spikes(states):
    from dqn2snn_plugin.adapters.spikingjelly import SpikingJellyBackend

    ckpt, calibration, test = states("Breakout")
    ours = convert(ckpt, calibration)
    theirs = copy.deepcopy(ours)
    theirs.backend = SpikingJellyBackend(kernel="spikingjelly")
    a, b = ours.readouts(test[:50], T=32), theirs.readouts(test[:50], T=32)
    assert torch.equal(a["spikes"], b["spikes"])
    torch.testing.assert_close(a["membrane"], b["membrane"])
    for x, y in zip(ours.last_stats.spikes, theirs.last_stats.spikes):
        assert torch.equal(x, y)


def test_spikingjelly_s_own_converted_graph_simulates_like_ours(states):
    """SpikingJelly's Converter with our recipe on the SNN's scales (scalers around IF nodes, weights
    unfolded), run by SpikingJelly, gives our outputs. Compared in float64: in float32 the two orders of
    arithmetic round differently and can flip an occasional spike."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import Converter

    from dqn2snn_plugin.adapters.spikingjelly import RobustNormRecipe

    ckpt, calibration, test = states("Breakout")
    snn = convert(ckpt, calibration).double()
    snn.options.event_driven = False  # the same dense arithmetic as SpikingJelly's layers
    graph = Converter(recipe=RobustNormRecipe(scales=snn.scales)).convert(copy.deepcopy(ckpt.q_network)).double()
    functional.set_step_mode(graph, "m")
    functional.reset_net(graph)
    x = ckpt.prepare(test[:20]).double()
    T = 32
    with torch.no_grad():
        theirs = graph(x.expand(T, *x.shape)).mean(0)
    torch.testing.assert_close(snn(test[:20], T=T, readout="membrane"), theirs, rtol=1e-7, atol=1e-7)


@pytest.mark.slow
def test_the_losing_pong_agent_is_not_flipped(states):
    """All Q-values of our Pong fixture are negative: the output layer must keep its own units."""
    ckpt, calibration, test = states("Pong")
    q = ckpt.q_values(test)
    assert (q < 0).all(), "fixture changed: Pong Q-values are no longer all negative"
    snn = convert(ckpt, calibration)
    values = snn(test, T=128)
    assert (values < 0).all()
    assert (values.argmax(1) == q.argmax(1)).float().mean() >= 0.8


def test_convert_leaves_the_users_network_untouched(states):
    ckpt, calibration, _ = states("Breakout")
    before = copy.deepcopy(ckpt.q_network.state_dict())
    convert(ckpt, calibration, channel_wise=True, initial_membrane="half")
    for key, value in ckpt.q_network.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.slow
def test_channel_wise_and_half_threshold_options_convert(states):
    ckpt, calibration, test = states("Breakout")
    snn = convert(ckpt, calibration, channel_wise=True, initial_membrane="half", backend="spikingjelly")
    assert snn.scales.hidden[0].shape == (32,)
    assert (snn.act(test, T=64) == ckpt.act(test)).float().mean() > 0.8


def test_bad_calibration_input_is_refused_before_building(states):
    ckpt, calibration, _ = states("Breakout")
    with pytest.raises(CalibrationError, match="empty"):
        convert(ckpt, calibration[:0])
    with pytest.raises(CalibrationError, match=r"\(4, 84, 84\)"):
        convert(ckpt, np.zeros((10, 3, 84, 84), np.uint8))
    with pytest.raises(ConfigError, match="backend"):
        convert(ckpt, calibration, backend="nengo")
    with pytest.raises(ConfigError, match="initial_membrane"):
        convert(ckpt, calibration, initial_membrane="random")


def test_unsupported_modules_are_refused():
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        convert(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)), torch.rand(5, 2))
    with pytest.raises(UnsupportedLayerError, match="Sequential"):
        convert(nn.GRU(2, 2), torch.rand(5, 2))
