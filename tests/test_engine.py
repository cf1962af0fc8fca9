"""The simulation engine: IF scans against hand-computed spike trains, the event-driven synapses and the
fused C layer calls against their separate steps, the schedule against a step-by-step reference, and the
spike bookkeeping compiled or in tensor operations."""

import contextlib

import pytest
import torch
from torch import nn

from dqn2snn_plugin import convert
from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.adapters.snntorch import SnnTorchBackend
from dqn2snn_plugin.adapters.spikingjelly import SpikingJellyBackend
from dqn2snn_plugin.engine.rate import if_scan


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


BACKENDS = [SpikingJellyBackend("scan"), SpikingJellyBackend("spikingjelly"), SnnTorchBackend()]

# (constant input current, initial membrane, T, expected spike train): worked by hand with
# H = V + I, spike when H >= 1, V = H - spike (values exact in binary floating point)
HAND_TRAINS = [
    (0.40625, 0.0, 8, [0, 0, 1, 0, 1, 0, 0, 1]),  # .41 .81 1.22|.22 .63 1.03|.03 .44 .84 1.25|.25
    (0.28125, 0.5, 8, [0, 1, 0, 0, 0, 1, 0, 0]),  # half-threshold start: .78 1.06|.06 .34 .63 .91 1.19|.19 ..
    (1.5, 0.0, 4, [1, 1, 1, 1]),  # saturates: at most one spike per step, the excess accumulates
    (-0.5, 0.0, 4, [0, 0, 0, 0]),
]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: f"{b.name}-{getattr(b, 'kernel', '')}")
@pytest.mark.parametrize("current, v0, T, expected", HAND_TRAINS)
def test_if_neuron_spike_trains_by_hand(backend, current, v0, T, expected):
    node = backend.make_neuron(v0)
    x = torch.full((T, 1, 1), current)
    spikes, v = backend.run(node, x, torch.full((1, 1), v0))
    assert spikes.flatten().tolist() == expected
    # no leak: final membrane = start + input - spikes (reset by subtraction)
    assert float(v) == pytest.approx(v0 + current * T - sum(expected))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "python"])
def test_a_membrane_exactly_at_threshold(fused):
    """SpikingJelly fires on H >= threshold, snnTorch on mem > threshold: one step later at a tie.
    Both IF scans of the SpikingJelly backend: the compiled one and its Python reference."""
    x = torch.full((4, 1), 0.25)  # H reaches exactly 1.0 at step 4
    with contextlib.nullcontext() if fused else fused_scan.switched_off():
        sj, _ = SpikingJellyBackend().run(SpikingJellyBackend().make_neuron(0.0), x, torch.zeros(1))
    snt, _ = SnnTorchBackend().run(SnnTorchBackend().make_neuron(0.0), x, torch.zeros(1))
    assert sj.flatten().tolist() == [0, 0, 0, 1]
    assert snt.flatten().tolist() == [0, 0, 0, 0]


def test_if_scan_handles_a_time_varying_current():
    x = torch.tensor([0.6, 0.6, -0.5, 0.9, 0.4]).view(5, 1)
    spikes, v = if_scan(x, torch.zeros(1))
    # .6 | 1.2 -> .2 | -.3 | .6 | 1.0 -> 0
    assert spikes.flatten().tolist() == [0, 1, 0, 0, 1]
    assert float(v) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("batch", [6, 1])  # binary coding splits a single observation's planes in two groups
@pytest.mark.parametrize("coding", ["rate", "binary"])
def test_event_driven_synapses_give_the_spikes_of_the_dense_pass(atari_observations, monkeypatch, coding, batch):
    """The Breakout SNN in float64, every spiking layer's synapses event by event vs dense passes:
    equal spike counts in every layer and sample, readouts equal up to rounding."""
    from conftest import atari_checkpoint

    snn = convert(atari_checkpoint(), atari_observations, coding=coding, T=8).double()
    atari_observations = atari_observations[:batch]
    snn.options.sparse_rate = snn.options.sparse_rate_planes = 1.0  # always event-driven (by default dense passes where many fire)
    calls = []  # the layers that read their input event by event (alone, or in a fused layer call)
    events = fused_scan.events

    def recorded_events(x, layer, *a, **k):
        out = events(x, layer, *a, **k)
        calls.extend([type(layer)] if out is not None else [])
        return out

    def recorded(fused_layer):  # fused_scan.rate_layer / binary_layer: the next layer is argument 7
        def call(*a, **k):
            out = fused_layer(*a, **k)
            calls.extend([type(a[7])] if out is not None and out[2] is not None else [])
            return out
        return call

    monkeypatch.setattr(fused_scan, "events", recorded_events)
    for name in ("rate_layer", "binary_layer"):
        monkeypatch.setattr(fused_scan, name, recorded(getattr(fused_scan, name)))
    driven = snn.readouts(atari_observations, 8)
    driven_spikes, driven_ops = [s.clone() for s in snn.last_stats.spikes], snn.last_stats.synaptic_ops.clone()
    assert calls == [nn.Conv2d, nn.Conv2d, nn.Linear], "conv2, conv3 and fc1 read events; fc2 (512 inputs) stays dense"
    snn.options.event_driven = False
    dense = snn.readouts(atari_observations, 8)
    assert len(calls) == 3
    assert all(torch.equal(a, b) for a, b in zip(driven_spikes, snn.last_stats.spikes))
    assert torch.equal(driven_ops, snn.last_stats.synaptic_ops)
    for name in dense:
        torch.testing.assert_close(driven[name], dense[name], rtol=0, atol=1e-9)
    with torch.no_grad():  # the event-driven pass keeps a re-laid-out copy of the weight: it must follow edits
        snn.synapses[1][-1].weight.mul_(-1.0)
    flipped = snn.readouts(atari_observations, 8)["membrane"]
    snn.options.event_driven = True
    torch.testing.assert_close(snn.readouts(atari_observations, 8)["membrane"], flipped, rtol=0, atol=1e-9)
    assert not torch.allclose(flipped, dense["membrane"])


def test_a_fused_binary_layer_call_equals_its_three_steps(atari_observations, monkeypatch):
    """fire, count and the event-driven pass in one C call (`fused_scan.binary_layer`) vs the backend's
    fire_binary, count and synapses.integrated in turn: the same arithmetic, so bit for bit equal."""
    from conftest import atari_checkpoint

    snn = convert(atari_checkpoint(), atari_observations, coding="binary", T=8)
    fused = [snn.readouts(atari_observations[:n], 8)["membrane"] for n in (6, 1)]
    stats = snn.last_stats
    monkeypatch.setattr(snn.backend, "binary_start", lambda neuron, v: None)  # no fusing: the three steps
    steps = [snn.readouts(atari_observations[:n], 8)["membrane"] for n in (6, 1)]
    assert all(torch.equal(a, b) for a, b in zip(fused, steps))
    assert torch.equal(stats.synaptic_ops, snn.last_stats.synaptic_ops)
    assert all(torch.equal(a, b) for a, b in zip(stats.spikes, snn.last_stats.spikes))
    assert all(torch.equal(a, b) for a, b in zip(stats.channel_spikes, snn.last_stats.channel_spikes))


@pytest.mark.parametrize("batch", [6, 1])
def test_a_fused_rate_layer_call_equals_its_three_steps(atari_observations, monkeypatch, batch):
    """The IF scan, count and event-driven pass in one C call (`fused_scan.rate_layer`) vs the backend's
    run, count and synapses.current in turn: the same arithmetic, so bit for bit equal."""
    from conftest import atari_checkpoint

    snn = convert(atari_checkpoint(), atari_observations, T=16)
    snn.options.block_samples = 8 * batch  # two time blocks: the membranes carried from one fused call to the next
    fused = snn.readouts(atari_observations[:batch], 16)
    stats = snn.last_stats
    monkeypatch.setattr(snn.backend, "scan_threshold", lambda neuron, current: None)  # no fusing: the three steps
    steps = snn.readouts(atari_observations[:batch], 16)
    assert all(torch.equal(fused[name], steps[name]) for name in steps)
    assert torch.equal(stats.synaptic_ops, snn.last_stats.synaptic_ops)
    assert all(torch.equal(a, b) for a, b in zip(stats.spikes, snn.last_stats.spikes))
    assert all(torch.equal(a, b) for a, b in zip(stats.channel_spikes, snn.last_stats.channel_spikes))


def test_event_driven_mlp_layers_read_spikes_without_a_flatten(monkeypatch):
    net = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    snn = convert(net, torch.randn(200, 6), backend="spikingjelly").double()
    obs = torch.randn(30, 6).double()
    snn.options.sparse_rate, snn.options.sparse_min_inputs = 1.0, 0  # always event-driven, narrow layers too
    outputs = []  # the next layer's currents from each fused layer call (None: a dense pass)
    rate_layer = fused_scan.rate_layer

    def recorded(*a, **k):
        out = rate_layer(*a, **k)
        outputs.append(out[2])
        return out

    monkeypatch.setattr(fused_scan, "rate_layer", recorded)
    driven = snn.readouts(obs, T=40)
    assert len(outputs) == 2 * 3 and all(o is not None for o in outputs)  # 2 layers, 3 time blocks (17 + 17 + 6)
    spikes = [s.clone() for s in snn.last_stats.spikes]
    snn.options.event_driven = False
    dense = snn.readouts(obs, T=40)
    torch.testing.assert_close(driven["membrane"], dense["membrane"], rtol=0, atol=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(spikes, snn.last_stats.spikes))


def step_by_step(snn, x: torch.Tensor, T: int):
    """Reference: the whole network one time step at a time on [B] inputs, IF updates written out.

    Returns the hidden spike trains [T, B, ...] per layer and the "spikes" readout."""
    current0 = snn.synapses[0](x)
    v = [torch.full_like(f, snn.initial_membrane).expand(x.shape[0], *f.shape).clone() for f in snn.engine.counter.fan_outs]
    v_out = torch.zeros(x.shape[0], snn.n_actions)
    trains, out_count = [[] for _ in v], torch.zeros_like(v_out)
    for _ in range(T):
        current = current0
        for layer, synapse in enumerate(snn.synapses[1:]):
            v[layer] += current
            spikes = (v[layer] >= 1.0).float()
            v[layer] -= spikes
            trains[layer].append(spikes)
            current = synapse(spikes)
        v_out += current / snn.scales.output
        fired = (v_out >= 1.0).float()
        v_out -= fired
        out_count += fired
    return [torch.stack(t) for t in trains], out_count * snn.scales.output / T


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "python"])
@pytest.mark.parametrize("block_samples", [512, 5], ids=["one-block", "blocks"])
def test_simulation_equals_a_step_by_step_reference_exactly(atari_observations, monkeypatch, fused, block_samples):
    """Hidden spike trains of the Breakout SNN, every layer, bit for bit (dense synapses on both sides)."""
    from conftest import atari_checkpoint

    ckpt = atari_checkpoint()
    snn = convert(ckpt, atari_observations)
    snn.options.event_driven, snn.options.block_samples = False, block_samples
    if not fused:
        monkeypatch.setattr(fused_scan, "library", lambda: None)
    recorded = []  # (spikes, ...) of every neuron layer in turn: the backend's run, or the fused C layer call
    run, rate_layer = snn.backend.run, fused_scan.rate_layer
    monkeypatch.setattr(snn.backend, "run", lambda *a: recorded.append(run(*a)) or recorded[-1])

    def recorded_rate_layer(*a, **k):
        out = rate_layer(*a, **k)
        recorded.extend([out] if out is not None else [])  # None: not usable (the Python loops), run instead
        return out

    monkeypatch.setattr(fused_scan, "rate_layer", recorded_rate_layer)
    x = ckpt.prepare(atari_observations[:3])
    T = 12
    out = snn.readouts(x, T)
    with torch.no_grad():
        trains, spikes_readout = step_by_step(snn, x, T)
    hidden = [torch.cat([r[0] for r in recorded[i :: len(trains) + 1]]) for i in range(len(trains))]
    assert all(t.sum() > 0 for t in trains)
    for ours, reference in zip(hidden, trains):
        assert torch.equal(ours, reference)
    assert torch.equal(out["spikes"], spikes_readout)
    assert torch.equal(snn.last_stats.spikes[0], trains[0].sum(0).flatten(1).sum(1))


def test_spike_bookkeeping_is_the_same_compiled_or_in_tensor_operations(atari_observations):
    """`count` runs in one C call (`fused_scan.tally`) where it can and in tensor operations elsewhere:
    spike totals, channel totals and synaptic operations must not depend on which."""
    from conftest import atari_checkpoint

    snn = convert(atari_checkpoint(), atari_observations, T=8).double()
    snn.options.event_driven = False  # the same currents on both sides
    snn.readouts(atari_observations, 16)
    compiled = snn.last_stats
    with fused_scan.switched_off():
        snn.readouts(atari_observations, 16)
    tensors = snn.last_stats
    assert compiled.synaptic_ops.sum() > 0
    assert torch.equal(compiled.synaptic_ops, tensors.synaptic_ops)
    assert all(torch.equal(a, b) for a, b in zip(compiled.spikes, tensors.spikes))
    assert all(torch.equal(a, b) for a, b in zip(compiled.channel_spikes, tensors.channel_spikes))
