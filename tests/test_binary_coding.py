"""Binary spike coding: the neuron against hand-computed codes, the network against the clip-floor-shift copy."""

import copy
import dataclasses

import pytest
import torch

from dqn2snn_plugin import convert
from dqn2snn_plugin.binary_coding import fire, integrate
from dqn2snn_plugin.distillation import quantised_copy
from dqn2snn_plugin.errors import ConfigError
from dqn2snn_plugin.store import load_snn, save_snn
from _fixtures import atari_checkpoint

# (membrane in least-significant-bit units, T, expected spikes, most significant first)
HAND_CODES = [
    (0.0, 4, [0, 0, 0, 0]),
    (0.9, 4, [0, 0, 0, 0]),  # below one bit: nothing
    (5.5, 4, [0, 1, 0, 1]),  # floor: 5 = 0101
    (11.0, 4, [1, 0, 1, 1]),
    (15.0, 4, [1, 1, 1, 1]),
    (40.0, 4, [1, 1, 1, 1]),  # saturates at 2**T - 1
    (-3.0, 4, [0, 0, 0, 0]),
    (200.25, 8, [1, 1, 0, 0, 1, 0, 0, 0]),
]


@pytest.mark.parametrize("v, T, expected", HAND_CODES)
def test_fire_sends_the_binary_code_most_significant_bit_first(v, T, expected):
    spikes, residual = fire(torch.tensor([v]), T)
    assert spikes[:, 0].tolist() == expected
    sent = sum(bit * 2 ** (T - 1 - t) for t, bit in enumerate(expected))
    assert float(residual) == pytest.approx(v - sent)  # reset by subtraction: the rest stays


def test_integrate_weighs_each_step_by_its_bit():
    current = torch.randn(6, 3, 5)
    expected = sum(2 ** (5 - t) * current[t] for t in range(6))
    assert torch.allclose(integrate(current), expected, atol=1e-4)


@pytest.fixture(scope="module")
def breakout_states():
    checkpoint = atari_checkpoint()
    generator = torch.Generator().manual_seed(0)
    states = torch.randint(0, 256, (40, 4, 84, 84), generator=generator, dtype=torch.uint8)
    return checkpoint, states


@pytest.mark.parametrize("T", [3, 8])
def test_binary_snn_equals_the_clip_floor_shift_copy_with_2_to_the_T_levels(breakout_states, T):
    checkpoint, states = breakout_states
    # all in float64, so that no activation lands within rounding noise of a level boundary
    checkpoint = dataclasses.replace(checkpoint, q_network=copy.deepcopy(checkpoint.q_network).double())
    snn = convert(checkpoint, states[:20], percentile=99.99, channel_wise=True, coding="binary", T=T)
    quantised = quantised_copy(checkpoint.q_network, snn.scales.hidden, 2**T - 1).double()
    x = checkpoint.prepare(states)
    with torch.no_grad():
        expected = quantised(x)
    readouts = snn.readouts(states, T)
    q = readouts["spikes+membrane"]
    assert torch.allclose(q, expected, atol=1e-9)
    assert all(torch.equal(r, q) for r in readouts.values())  # the output layer only integrates
    # every spike is a one in some neuron's code: count the ones of the copy's codes
    codes = []
    with torch.no_grad():
        for layer in quantised:
            x = layer(x)
            if hasattr(layer, "levels"):
                n = torch.round(x / layer.lam(x) * layer.levels).long()
                codes.append(sum(((n >> bit) & 1) for bit in range(T)).flatten(1).sum(1))
    assert [s.long().tolist() for s in snn.last_stats.spikes] == [c.tolist() for c in codes]


def test_more_bits_approach_the_clipped_dqn(breakout_states):
    checkpoint, states = breakout_states
    exact = quantised_copy(checkpoint.q_network, convert(checkpoint, states, percentile=99.99).scales.hidden, 2**30)
    with torch.no_grad():
        target = exact(checkpoint.prepare(states))
    errors = []
    for T in (2, 4, 8, 12):
        snn = convert(checkpoint, states, percentile=99.99, coding="binary", T=T)
        errors.append(float((snn(states) - target).abs().max()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.01 * errors[0]


def test_zero_initial_membrane_truncates_and_costs_fewer_spikes(breakout_states):
    checkpoint, states = breakout_states
    rounded = convert(checkpoint, states, coding="binary", T=4)  # binary coding rounds by default
    truncated = convert(checkpoint, states, coding="binary", T=4, initial_membrane="zero")
    assert rounded.initial_membrane == 0.5 and truncated.initial_membrane == 0.0
    rounded(states), truncated(states)
    assert rounded.last_stats.spikes_per_decision > truncated.last_stats.spikes_per_decision


def test_binary_snn_survives_save_and_load(breakout_states, tmp_path):
    checkpoint, states = breakout_states
    snn = convert(checkpoint, states, percentile=99.99, coding="binary", T=6)
    save_snn(snn, checkpoint, tmp_path / "snn.pt")
    loaded, _ = load_snn(tmp_path / "snn.pt")
    assert loaded.coding == "binary" and loaded.T == 6
    assert torch.equal(loaded(states), snn(states))


@pytest.mark.parametrize("options, message", [
    ({"coding": "unary"}, "coding must be one of rate, binary"),
    ({"coding": "binary", "T": 25}, "float32 resolves at most 24 bits"),
    ({"coding": "binary", "input_coding": "poisson"}, "use input_coding='analog'"),
])
def test_bad_binary_options_are_refused(breakout_states, options, message):
    checkpoint, states = breakout_states
    with pytest.raises(ConfigError, match=message):
        convert(checkpoint, states, **options)


def test_binary_coding_refuses_too_many_bits_and_carried_state(breakout_states):
    checkpoint, states = breakout_states
    snn = convert(checkpoint, states, coding="binary", T=8)
    with pytest.raises(ConfigError, match="at most 24 bits"):
        snn(states, T=32)
    snn.carry_state = True
    with pytest.raises(ConfigError, match="carry_state must be False"):
        snn(states)


def test_binary_coding_defaults_to_8_bits_and_rounding(breakout_states):
    checkpoint, states = breakout_states
    snn = convert(checkpoint, states, coding="binary")
    assert (snn.T, snn.initial_membrane) == (8, 0.5)
    assert convert(checkpoint, states).T == 64  # rate coding keeps its default
