"""Binary spike coding: the neuron against hand-computed codes, the network against the clip-floor-shift copy,
the frameworks' neurons (SpikingJelly's FewSpikeNode, our snnTorch BinaryFewSpikes) against both."""

import copy
import dataclasses

import pytest
import snntorch
import torch

from spikingjelly.activation_based.neuron.few_spike import FewSpikeNode

from dqn2snn_plugin import convert
from dqn2snn_plugin.adapters.snntorch import BinaryFewSpikes, SnnTorchBackend
from dqn2snn_plugin.adapters.spikingjelly import SpikingJellyBackend
from dqn2snn_plugin import binary_coding
from dqn2snn_plugin.binary_coding import fire, integrate
from dqn2snn_plugin.improve.distillation import distill, quantised_copy
from dqn2snn_plugin.errors import ConfigError
from dqn2snn_plugin.io.store import load_snn, save_snn
from conftest import atari_checkpoint

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


BACKENDS = {"reference": SpikingJellyBackend("scan"), "spikingjelly": SpikingJellyBackend("spikingjelly"),
            "snntorch": SnnTorchBackend()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v0", [0.5, 0.0])
def test_each_backends_neuron_sends_the_rounded_code(backend, v0, monkeypatch):
    """10,000 membranes in [-0.2, 1.2] x full scale: the bits of clip(floor(v + V0), 0, 2**T - 1), exactly;
    the frameworks' neurons without falling back on `fire`."""
    if backend != "reference":
        monkeypatch.setattr(binary_coding, "fire", None)
    T = 8
    v = torch.empty(10_000, dtype=torch.float64).uniform_(-0.2, 1.2, generator=torch.Generator().manual_seed(0))
    v = v * (2**T - 1)
    n = torch.floor(v + v0).clamp(0, 2**T - 1).long()
    impl = BACKENDS[backend]
    spikes, residual = impl.fire_binary(impl.make_binary_neuron(T, v0), v)
    assert torch.equal(spikes.long(), torch.stack([(n >> (T - 1 - t)) & 1 for t in range(T)]))
    torch.testing.assert_close(residual, v + v0 - n, rtol=0, atol=1e-9)


def test_the_frameworks_neurons_are_their_own_classes():
    assert type(SpikingJellyBackend().make_binary_neuron(8, 0.5)) is FewSpikeNode
    node = SnnTorchBackend().make_binary_neuron(8, 0.5)
    assert isinstance(node, BinaryFewSpikes) and isinstance(node, snntorch.SpikingNeuron)
    spk, mem = node(torch.tensor([200.25]))  # snnTorch's step convention: (spikes, membrane)
    assert (float(spk), float(mem)) == (1.0, 2 * (200.75 - 128))


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


@pytest.mark.parametrize("backend", ["spikingjelly", "snntorch"])
def test_binary_snn_survives_save_and_load(breakout_states, tmp_path, backend):
    checkpoint, states = breakout_states
    snn = convert(checkpoint, states, percentile=99.99, coding="binary", T=6, backend=backend)
    save_snn(snn, checkpoint, tmp_path / "snn.pt")
    loaded, _ = load_snn(tmp_path / "snn.pt")
    assert (loaded.coding, loaded.T, loaded.backend.name) == ("binary", 6, backend)
    assert type(loaded.neurons[0]) is type(snn.neurons[0])
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


@pytest.fixture(scope="module")
def breakout64(breakout_states):
    checkpoint, states = breakout_states
    return dataclasses.replace(checkpoint, q_network=copy.deepcopy(checkpoint.q_network).double()), states


@pytest.mark.parametrize("T", [8, 5])
def test_backends_and_reference_give_the_same_spikes_and_q_values(breakout64, T):
    """convert(..., coding="binary") on `fire` (the CPU default), on FewSpikeNode and on snnTorch: exact in
    float64; a T other than the network's own builds fresh neurons."""
    checkpoint, states = breakout64
    reference = convert(checkpoint, states[:20], percentile=99.99, channel_wise=True, coding="binary")
    assert all(type(n) is FewSpikeNode for n in reference.neurons)
    sj = copy.deepcopy(reference)
    sj.backend = SpikingJellyBackend("spikingjelly")
    snt = convert(checkpoint, None, scales=sj.scales, coding="binary", backend="snntorch")
    assert all(isinstance(n, BinaryFewSpikes) for n in snt.neurons)
    runs = [(net(states, T), net.last_stats) for net in (reference, sj, snt)]
    (q, stats), others = runs[0], runs[1:]
    assert stats.T == T
    for q_other, stats_other in others:
        torch.testing.assert_close(q_other, q, rtol=0, atol=1e-12)
        assert all(torch.equal(a, b) for a, b in zip(stats_other.spikes, stats.spikes))
        assert torch.equal(stats_other.synaptic_ops, stats.synaptic_ops)


@pytest.mark.parametrize("backend", ["spikingjelly", "snntorch"])
def test_a_distilled_binary_copy_converts_on_both_backends(mlp_checkpoint, backend):
    states = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    result = distill(mlp_checkpoint, states, T=4, epochs=1, snn_epochs=0, batch_size=32, coding="binary")
    snn = result.to_snn(backend).double()
    assert snn.coding == "binary" and type(snn.neurons[0]).__name__ in ("FewSpikeNode", "BinaryFewSpikes")
    with torch.no_grad():
        expected = result.quantised.double()(states.double())
    # folded in float32 (the copy is float32) before .double(), hence 1e-6 rather than float64 noise
    torch.testing.assert_close(snn(states), expected, rtol=0, atol=1e-6)
    assert torch.equal(snn.act(states), expected.argmax(1))
