"""IF dynamics against hand-computed spike trains, readouts, state handling, and bad input."""

import pytest
import torch
from torch import nn

from dqn2snn_plugin import convert
from dqn2snn_plugin.adapters.snntorch import SnnTorchBackend
from dqn2snn_plugin.adapters.spikingjelly import SpikingJellyBackend
from dqn2snn_plugin.errors import ConfigError, ObservationError
from dqn2snn_plugin.spiking import if_scan

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


def test_a_membrane_exactly_at_threshold():
    """SpikingJelly fires on H >= threshold, snnTorch on mem > threshold: one step later at a tie."""
    x = torch.full((4, 1), 0.25)  # H reaches exactly 1.0 at step 4
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


def tiny_network() -> nn.Sequential:
    """x -> ReLU(x) -> Q = [h, 0.5]: with lambda = 1 the hidden neuron's rate is x itself."""
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0], [0.0]]))
        net[2].bias.copy_(torch.tensor([0.0, 0.5]))
    return net


@pytest.mark.parametrize("backend", ["spikingjelly", "snntorch"])
def test_readouts_of_a_hand_computed_network(backend):
    calibration = torch.tensor([[0.0], [0.5], [1.0]])  # max activation 1.0 -> lambda = 1
    snn = convert(tiny_network(), calibration, percentile="max", backend=backend)
    assert float(snn.scales.hidden[0]) == 1.0
    out = snn.readouts(torch.tensor([[0.40625]]), T=8)
    # hidden neuron spikes 3 times in 8 steps (train above): Q_0 estimate 3/8, Q_1 = bias 0.5 exactly
    assert out["membrane"][0].tolist() == pytest.approx([0.375, 0.5])
    assert out["spikes+membrane"][0].tolist() == pytest.approx([0.375, 0.5])
    # output neurons fire on Q / lambda_out, lambda_out = max |Q| over calibration = 1.0; Q_1's
    # neuron gets 0.5 per step and spikes at steps 2, 4, 6, 8 (exact hits: SpikingJelly's rule)
    assert snn.scales.output == 1.0
    if backend == "spikingjelly":
        assert out["spikes"][0].tolist() == pytest.approx([3 / 8, 4 / 8])
    assert snn.last_stats.spikes[0].tolist() == [3.0]
    assert snn.act(torch.tensor([[0.40625]]), T=8).tolist() == [1]
    assert snn.act(torch.tensor([[0.875]]), T=8).tolist() == [0]


def test_ties_go_to_the_lowest_action_index():
    net = tiny_network()
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.fill_(0.25)  # both actions always equal
    snn = convert(net, torch.rand(10, 1) + 0.1, backend="snntorch")
    for readout in ("spikes", "spikes+membrane", "membrane"):
        assert snn.act(torch.rand(4, 1), T=16, readout=readout).tolist() == [0, 0, 0, 0]


def test_readouts_at_many_T_equal_separate_runs():
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    calibration = torch.randn(300, 5)
    snn = convert(net, calibration, backend="spikingjelly")
    obs = torch.randn(20, 5)
    together = snn.readouts_at(obs, [4, 16, 50])
    snn.max_elements = 4 * 50 * 35  # forces small batch chunks
    snn.block_samples = 20  # and one time step per block
    chunked = snn.readouts_at(obs, [4, 16, 50])
    for T in (4, 16, 50):
        alone = snn.readouts(obs, T)
        torch.testing.assert_close(chunked[T]["spikes"], together[T]["spikes"])
        for name in alone:
            torch.testing.assert_close(together[T][name], alone[name], rtol=1e-5, atol=1e-6)


def test_event_driven_fully_connected_path_equals_the_dense_pass():
    net = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    snn = convert(net, torch.randn(200, 6), backend="spikingjelly")
    obs = torch.randn(30, 6)
    snn.event_driven, snn.sparse_rate, snn.sparse_min_inputs = True, 1.0, 0  # always sparse, narrow layers too
    addmm_calls = []
    real_addmm = torch.addmm
    torch.addmm = lambda *a, **k: addmm_calls.append(1) or real_addmm(*a, **k)
    try:
        snn.readouts(obs, T=40)
    finally:
        torch.addmm = real_addmm
    assert len(addmm_calls) == 2 * 3  # both fc layers after a spiking one, in each time block (17 + 17 + 6 steps)
    sparse = snn.readouts(obs, T=40)
    sparse_spikes = [s.clone() for s in snn.last_stats.spikes]
    snn.event_driven = False
    dense = snn.readouts(obs, T=40)
    torch.testing.assert_close(sparse["membrane"], dense["membrane"], rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(sparse_spikes, snn.last_stats.spikes))
    with torch.no_grad():  # the sparse path keeps a transposed copy of the weight: it must follow edits
        snn.synapses[1][-1].weight.mul_(-1.0)
    snn.event_driven = True
    flipped = snn.readouts(obs, T=40)["membrane"]
    snn.event_driven = False
    torch.testing.assert_close(flipped, snn.readouts(obs, T=40)["membrane"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(flipped, dense["membrane"])


def test_carry_state_keeps_membranes_between_calls():
    net = tiny_network()
    snn = convert(net, torch.tensor([[1.0]]), percentile="max", backend="snntorch")
    snn.carry_state = True
    first = snn.readouts(torch.tensor([[0.40625]]), T=2)  # .41 .81: no spike yet
    assert snn.last_stats.spikes[0].tolist() == [0.0]
    second = snn.readouts(torch.tensor([[0.40625]]), T=2)  # 1.22 -> spike: the carried membrane pays off
    assert first["membrane"][0, 0] == 0 and snn.last_stats.spikes[0].tolist() == [1.0]
    assert second["membrane"][0, 0] == pytest.approx(0.5)
    with pytest.raises(ObservationError, match="reset_state"):
        snn.readouts(torch.rand(3, 1), T=2)
    snn.reset_state()
    assert snn.readouts(torch.rand(3, 1), T=2)["membrane"].shape == (3, 2)


def test_bad_observations_and_T_are_refused():
    snn = convert(tiny_network(), torch.rand(10, 1) + 0.1)
    with pytest.raises(ObservationError, match=r"expected \[B, 1\]"):
        snn(torch.rand(4, 3))
    for bad_T in (0, -5, 2.5, True):
        with pytest.raises(ConfigError):
            snn(torch.rand(4, 1), T=bad_T)
    with pytest.raises(ConfigError, match="readout"):
        snn(torch.rand(4, 1), readout="votes")


def test_scales_of_another_network_are_refused():
    other = convert(nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)),
                    torch.rand(20, 1) + 0.1)
    with pytest.raises(ConfigError, match="2 spiking layers"):
        convert(tiny_network(), None, scales=other.scales)


def test_poisson_input_coding_approaches_the_rate():
    net = tiny_network()
    snn = convert(net, torch.tensor([[1.0]]), percentile="max", input_coding="poisson", input_max=1.0)
    out = snn.readouts(torch.full((64, 1), 0.5), T=200)["membrane"][:, 0]
    assert float(out.mean()) == pytest.approx(0.5, abs=0.03)  # Bernoulli(0.5) input, rate 1/2
    with pytest.raises(ConfigError, match="input_max"):
        convert(net, torch.tensor([[1.0]]), input_coding="poisson")


def step_by_step(snn, x: torch.Tensor, T: int):
    """Reference: the whole network one time step at a time on [B] inputs, IF updates written out.

    Returns the hidden spike trains [T, B, ...] per layer and the "spikes" readout."""
    current0 = snn.synapses[0](x)
    v = [torch.full_like(f, snn.initial_membrane).expand(x.shape[0], *f.shape).clone() for f in snn._fan_out]
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
    from _fixtures import atari_checkpoint

    from dqn2snn_plugin import fused_scan

    ckpt = atari_checkpoint()
    snn = convert(ckpt, atari_observations)
    snn.event_driven, snn.block_samples = False, block_samples
    if not fused:
        monkeypatch.setattr(fused_scan, "_switched_off", True)
    recorded = []
    run = snn.backend.run
    monkeypatch.setattr(snn.backend, "run", lambda *a: recorded.append(run(*a)) or recorded[-1])
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
