"""The network's public calls: readouts by hand, several T at once, state handling, bad input, every layer's
spikes against loops written out, the plain graph view (`as_sequential`) and the weights held once."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin import convert
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.errors import ConfigError, ObservationError
from dqn2snn_plugin.normalization import layer_scales
from dqn2snn_plugin.engine import READOUTS


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


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
    snn.options.block_samples = 20  # one time step per block
    snn.options.max_elements = 1 * 35 * 6  # (steps per block x neurons per sample x 6): chunks of 6 samples
    sizes = _count_chunks(snn)
    chunked = snn.readouts_at(obs, [4, 16, 50])
    assert len(sizes) > 2 and max(sizes) < len(obs) and sum(sizes) == len(obs)
    for T in (4, 16, 50):
        alone = snn.readouts(obs, T)
        torch.testing.assert_close(chunked[T]["spikes"], together[T]["spikes"])
        for name in alone:
            torch.testing.assert_close(together[T][name], alone[name], rtol=1e-5, atol=1e-6)


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


def test_each_env_keeps_its_own_membranes_and_resets_alone():
    snn = convert(tiny_network(), torch.tensor([[1.0]]), percentile="max", backend="snntorch")
    snn.carry_state = True
    x = torch.tensor([[0.40625], [0.40625]])  # two steps: .41 .81, no spike; two more carried: 1.22 -> spike
    snn.readouts(x, T=2, rows=[0, 1])
    assert snn.last_stats.spikes[0].tolist() == [0.0, 0.0]
    snn.reset_state([1])  # env 1's episode starts again
    snn.readouts(x, T=2, rows=[1, 0])  # in another order: env 1 first (fresh), env 0 carried
    assert snn.last_stats.spikes[0].tolist() == [0.0, 1.0]
    snn.readouts(x[:1], T=2, rows=[4])  # an env never seen starts fresh; the rows between are kept fresh
    assert snn.last_stats.spikes[0].tolist() == [0.0] and snn._state[0].shape[0] == 5
    snn.reset_state(torch.tensor([True, False, False, False, False]))  # a mask works as well
    snn.readouts(x, T=2, rows=[0, 1])  # env 0 fresh: no spike; env 1 carried from its fresh start: spikes
    assert snn.last_stats.spikes[0].tolist() == [0.0, 1.0]
    with pytest.raises(ObservationError, match="distinct indices"):
        snn.readouts(x, T=2, rows=[2, 2])


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


@pytest.mark.parametrize("input_max", [1.0, 2.0])
def test_poisson_input_coding_approaches_the_rate(input_max):
    net = tiny_network()
    snn = convert(net, torch.tensor([[1.0]]), percentile="max", input_coding="poisson", input_max=input_max)
    out = snn.readouts(torch.full((64, 1), 0.5), T=200)["membrane"][:, 0]
    # spikes of size input_max at rate 0.5 / input_max: a mean input of 0.5, whatever input_max
    assert float(out.mean()) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ConfigError, match="input_max"):
        convert(net, torch.tensor([[1.0]]), input_coding="poisson")


# ---------------------------------------------------------------- against a step-by-step loop
# The reference below is written from the method, not from the code: the DQN's own layers, the layer
# scales, and one time step at a time for the whole network (rate coding), or one layer's code at a
# time (binary coding, as the binary_coding module doc describes it). The scales are powers of two,
# so that folding them into the weights is exact, and both sides run in float64 (snn.double()), so
# that no membrane lands within rounding of a threshold: spikes must match exactly.


def small_conv_net() -> nn.Sequential:
    """Three spiking layers (two convolutions, one fully connected) on [2, 6, 6] inputs, 3 actions."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 2, stride=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3)).eval()


def power_of_two_snn(net: nn.Sequential, **options):
    """`net` converted with its 99th-percentile scales rounded to powers of two, simulated in float64."""
    checkpoint = DQNCheckpoint(net, 3, (2, 6, 6), "CnnPolicy", "DQN", None, None, "<test>")
    measured = layer_scales(net, torch.rand(64, 2, 6, 6), 99.0)
    def two(x):
        return 2.0 ** round(math.log2(float(x)))
    scales = dataclasses.replace(measured, hidden=tuple(torch.tensor(two(s)) for s in measured.hidden),
                                 output=two(measured.output))
    return convert(checkpoint, None, scales=scales, **options).double()


def _stages(net: nn.Sequential) -> list[nn.Sequential]:
    stages, current = [], []
    for layer in net:
        if isinstance(layer, nn.ReLU):
            stages.append(nn.Sequential(*current))
            current = []
        else:
            current.append(layer)
    return [*stages, nn.Sequential(*current)]


@torch.no_grad()
def stepwise_rate(net, lambdas, output_scale, x, T, v0, fires):
    """Per-neuron spike totals of each layer and the three readouts, one time step at a time."""
    stages = _stages(net)
    scale = [1.0, *lambdas, 1.0]  # input, spiking layers, Q-values
    v = [None] * len(lambdas)
    totals = [0.0] * len(lambdas)
    out_current, out_v, out_count = 0.0, None, 0.0
    for _ in range(T):
        signal = x  # analog input: the observation at every step
        for layer, stage in enumerate(stages[:-1]):
            current = stage(signal * scale[layer]) / scale[layer + 1]
            v[layer] = torch.full_like(current, v0) if v[layer] is None else v[layer]
            v[layer] += current
            spikes = fires(v[layer]).double()
            v[layer] -= spikes
            totals[layer] = totals[layer] + spikes
            signal = spikes
        q_current = stages[-1](signal * scale[-2])
        out_v = torch.full_like(q_current, v0) if out_v is None else out_v
        out_v += q_current / output_scale
        out_spikes = fires(out_v).double()
        out_v -= out_spikes
        out_current, out_count = out_current + q_current, out_count + out_spikes
    readouts = {"membrane": out_current / T, "spikes+membrane": out_current / T,
                "spikes": out_count * output_scale / T}
    return totals, readouts


@torch.no_grad()
def stepwise_binary(net, lambdas, x, T, v0):
    """Binary coding: each layer integrates the previous layer's T-bit code, then sends its own."""
    stages = _stages(net)
    scale = [1.0, *lambdas, 1.0]  # input, spiking layers, Q-values
    levels = 2**T - 1
    v = stages[0](x) / scale[1] * levels  # the constant analog input over T integration steps
    totals = []
    for layer, stage in enumerate(stages[1:]):
        v = v + v0
        code = []
        for t in range(T):  # most significant bit first
            weight = 2 ** (T - 1 - t)
            spikes = (v >= weight).double()
            v = v - spikes * weight
            code.append(spikes)
        totals.append(sum(code))
        v = 0.0
        for t, spikes in enumerate(code):  # the next membrane doubles before each step's input
            v = 2 * v + stage(spikes * scale[layer + 1]) / scale[layer + 2]
    return totals, v / levels


def _per_sample(total):
    return total.flatten(1).sum(1)


def _per_channel(total):
    return total.sum(0).flatten(1).sum(1) if total.ndim > 2 else total.sum(0)


def _count_chunks(snn):
    """Batch sizes seen by the first synaptic stage: one call per batch chunk with analog input."""
    sizes = []
    snn.synapses[0].register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    return sizes


@pytest.mark.parametrize("backend, fires", [("spikingjelly", lambda v: v >= 1.0), ("snntorch", lambda v: v > 1.0)],
                         ids=["spikingjelly", "snntorch"])
@pytest.mark.parametrize("initial_membrane", ["zero", "half"])
def test_rate_coded_spikes_in_every_layer_equal_a_step_by_step_loop(backend, fires, initial_membrane):
    net = small_conv_net()
    snn = power_of_two_snn(net, backend=backend, initial_membrane=initial_membrane)
    obs = torch.randint(0, 2, (24, 2, 6, 6)).double()  # whole pixel values, as image observations must be
    T = 16
    snn.options.block_samples = 4 * len(obs)  # 4 time steps per block
    snn.options.max_elements = 4 * 77 * 5  # steps per block x neurons per sample x 5: chunks of 5 samples
    sizes = _count_chunks(snn)
    readouts = snn.readouts(obs, T)
    assert len(sizes) > 2 and max(sizes) < len(obs) and sum(sizes) == len(obs)  # the chunks really ran

    lambdas = [float(s) for s in snn.scales.hidden]
    totals, expected = stepwise_rate(net.double(), lambdas, snn.scales.output, obs, T, snn.initial_membrane, fires)
    for layer, total in enumerate(totals):
        assert snn.last_stats.spikes[layer].tolist() == _per_sample(total).tolist(), f"layer {layer}"
        assert snn.last_stats.channel_spikes[layer].tolist() == _per_channel(total).tolist(), f"layer {layer}"
    assert all(float(t.sum()) > 0 for t in totals)  # every layer carries spikes: the check is not vacuous
    for name, values in expected.items():
        torch.testing.assert_close(readouts[name], values, rtol=0, atol=1e-9, msg=name)


def test_binary_coded_spikes_in_every_layer_equal_a_layer_by_layer_loop():
    net = small_conv_net()
    snn = power_of_two_snn(net, coding="binary", T=6)
    obs = torch.randint(0, 2, (24, 2, 6, 6)).double()  # whole pixel values, as image observations must be
    snn.options.max_elements = 6 * 77 * 5  # binary coding holds all T = 6 steps: chunks of 5 samples
    sizes = _count_chunks(snn)
    readouts = snn.readouts(obs, 6)
    assert len(sizes) > 2 and max(sizes) < len(obs) and sum(sizes) == len(obs)

    totals, q = stepwise_binary(net.double(), [float(s) for s in snn.scales.hidden], obs, 6, snn.initial_membrane)
    for layer, total in enumerate(totals):
        assert snn.last_stats.spikes[layer].tolist() == _per_sample(total).tolist(), f"layer {layer}"
        assert snn.last_stats.channel_spikes[layer].tolist() == _per_channel(total).tolist(), f"layer {layer}"
    assert all(float(t.sum()) > 0 for t in totals)
    for name in READOUTS:
        torch.testing.assert_close(readouts[name], q, rtol=0, atol=1e-9, msg=name)


# ---------------------------------------------------------------- cost by hand


def counting_network(side: int, stride: int) -> DQNCheckpoint:
    """[1, side, side] input -> identity 1x1 conv -> ReLU -> 2x2 conv (given stride) to 2 channels of
    2x2 (zero weights, bias 0.5) -> ReLU -> Linear(8, 2). Layer 2's eight neurons send to 2 outputs."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Conv2d(1, 2, 2, stride=stride), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[2].weight.zero_()
        net[2].bias.fill_(0.5)
    return DQNCheckpoint(net.eval(), 2, (1, side, side), "CnnPolicy", "DQN", None, None, "<test>")


# Layer 1's neurons see the input itself, whole pixel values (as image observations must be) 2 and 1;
# its percentile-max scale lambda_1 = 2 maps them to two 1s and two 0.5s, the rest 0. With
# stride 1 on 3x3 a neuron sends to 1, 2 or 4 positions of 2 channels: fan-out 2 at a corner, 4 on
# an edge, 8 in the centre; the 1s sit at a corner and the centre, the 0.5s at two corners. With
# stride 2 on 4x4 the windows do not overlap: fan-out 2 everywhere.
STRIDE_1_OBS = torch.tensor([[[[2.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0]]]])
STRIDE_2_OBS = torch.tensor([[[[2.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 2.0]]]])


@pytest.mark.parametrize("coding, stride, spikes, ops", [
    # rate, T = 4, membranes from 0: a 1 fires 4 times, a 0.5 twice (at 1.0: SpikingJelly fires on >=);
    # layer 1: 4 + 2 + 4 + 2 = 12 spikes, 4*2 + 2*2 + 4*8 + 2*2 = 48 operations (stride 1) or 12*2 = 24
    # (stride 2); layer 2 gets 0.5 / 0.5 = 1 per step: 8 x 4 = 32 spikes, 32 x 2 = 64 operations
    ("rate", 1, [12, 32], 48 + 64),
    ("rate", 2, [12, 32], 24 + 64),
    # binary, 4 bits, membranes from 1/2: 15 x 1 + 0.5 -> 1111 (4 spikes), 15 x 0.5 + 0.5 = 8 -> 1000
    # (1 spike): 4 + 1 + 4 + 1 = 10 spikes, 4*2 + 1*2 + 4*8 + 1*2 = 44 operations (stride 1) or 10*2 = 20
    # (stride 2); layer 2: 15 + 0.5 -> 1111, as with rate coding
    ("binary", 1, [10, 32], 44 + 64),
    ("binary", 2, [10, 32], 20 + 64),
])
def test_spikes_and_synaptic_operations_per_decision_by_hand(coding, stride, spikes, ops):
    obs = STRIDE_1_OBS if stride == 1 else STRIDE_2_OBS
    checkpoint = counting_network(obs.shape[-1], stride)
    snn = convert(checkpoint, obs, percentile="max", coding=coding, T=4, backend="spikingjelly")
    assert [float(s) for s in snn.scales.hidden] == [2.0, 0.5]
    snn.readouts(obs.repeat(3, 1, 1, 1), T=4)
    stats = snn.last_stats
    assert [s.tolist() for s in stats.spikes] == [[spikes[0]] * 3, [spikes[1]] * 3]
    assert stats.synaptic_ops.tolist() == [ops] * 3
    assert stats.spikes_per_decision == sum(spikes)
    if coding == "rate":
        assert stats.firing_rates == pytest.approx([12 / (obs[0].numel() * 4), 1.0])


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: none here, so the GPU simulation path is not tested on this machine")
@pytest.mark.parametrize("coding", ["rate", "binary"])
def test_cuda_simulation_gives_the_spikes_of_the_cpu(coding):
    snn = power_of_two_snn(small_conv_net(), coding=coding, T=6)
    obs = torch.randint(0, 2, (24, 2, 6, 6)).double()  # whole pixel values, as image observations must be
    cpu = snn.readouts(obs, 6)
    cpu_spikes, cpu_ops = [s.clone() for s in snn.last_stats.spikes], snn.last_stats.synaptic_ops.clone()
    snn.to("cuda")
    gpu = snn.readouts(obs.cuda(), 6)
    assert all(g.device.type == "cuda" for g in gpu.values())
    assert [s.cpu().tolist() for s in snn.last_stats.spikes] == [s.tolist() for s in cpu_spikes]
    assert snn.last_stats.synaptic_ops.cpu().tolist() == cpu_ops.tolist()
    for name, values in cpu.items():
        torch.testing.assert_close(gpu[name].cpu(), values, rtol=0, atol=1e-9)


def test_an_sb3_mlp_checkpoint_whose_network_starts_with_flatten_simulates(zoo_zip):
    """SB3's MLP Q-networks begin with Flatten (the FlattenExtractor): the simulation once looked for
    the first layer's weights at index 0 and failed on every classic-control checkpoint."""
    from dqn2snn_plugin import load_dqn

    checkpoint = load_dqn(zoo_zip)
    assert isinstance(checkpoint.q_network[0], nn.Flatten)
    states = torch.randn(200, *checkpoint.observation_shape)
    snn = convert(checkpoint, states, T=64)
    assert float((snn.act(states[:50]) == checkpoint.act(states[:50])).float().mean()) > 0.5


def test_the_state_dict_holds_each_weight_once(mlp_checkpoint):
    """The folded stages are the SNN's only weights: 2,036 values for the 2,036-parameter MLP (SpikingJelly's
    converted graph, once kept as `snn.native`, doubled them)."""
    snn = convert(mlp_checkpoint, torch.randn(100, 6), T=12)
    values = sum(v.numel() for v in snn.state_dict().values())
    assert values == sum(p.numel() for p in mlp_checkpoint.q_network.parameters()) == 2036
    assert all(key.startswith("synapses.") for key in snn.state_dict())


def run_sequential(net: nn.Sequential, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The SpikingJelly way: reset, then one call per time step; the outputs summed."""
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    with torch.no_grad():
        return sum(net(x) for _ in range(steps))


@pytest.mark.parametrize("initial_membrane", ["zero", "half"])
def test_as_sequential_equals_the_snn_and_follows_its_bias_shifts(mlp_checkpoint, initial_membrane):
    """Rate coding: T single-step calls of the plain graph, summed / T, are the "membrane" readout; after
    `shift_bias` too, since the graph holds the SNN's own stages. In float64: the per-step and the
    multi-step passes round alike there."""
    states = torch.randn(200, 6)
    snn = convert(mlp_checkpoint, states, T=16, initial_membrane=initial_membrane).double()
    net, x = snn.as_sequential(), states[:40].double()
    assert [type(m).__name__ for m in net] == ["Linear", type(snn.neurons[0]).__name__, "Linear",
                                               type(snn.neurons[1]).__name__, "Linear"]
    before = snn(x, readout="membrane")
    torch.testing.assert_close(run_sequential(net, x, 16) / 16, before, rtol=1e-12, atol=1e-12)
    snn.shift_bias(0, torch.full((48,), 0.05))
    snn.shift_bias(2, torch.tensor([0.3, 0.0, -0.3, 0.0]))
    shifted = snn(x, readout="membrane")
    assert (shifted - before).abs().max() > 0.1
    torch.testing.assert_close(run_sequential(net, x, 16) / 16, shifted, rtol=1e-12, atol=1e-12)


def test_as_sequential_of_binary_coding_sends_each_code_in_one_call(mlp_checkpoint):
    """Binary coding: one single-step call of the plain graph (scaler to least significant bits, then
    SpikingJelly's FewSpikeNode) is the Q-value readout, before and after a bias shift."""
    states = torch.randn(200, 6)
    snn = convert(mlp_checkpoint, states, T=6, coding="binary").double()
    net, x = snn.as_sequential(), states[:40].double()
    before = snn(x)
    torch.testing.assert_close(run_sequential(net, x, 1), before, rtol=1e-12, atol=1e-12)
    snn.shift_bias(1, torch.full((32,), 0.02))
    assert not torch.equal(snn(x), before)
    torch.testing.assert_close(run_sequential(net, x, 1), snn(x), rtol=1e-12, atol=1e-12)


def test_as_sequential_traces_with_nirtorch(mlp_checkpoint):
    """The view is a plain torch graph: nirtorch traces it (given a node for SpikingJelly's IF modules) into
    the chain `io.nir_graph.to_nir` writes by hand. Type checks off: this sketch's IF nodes hold one
    value, not one per neuron."""
    import nir
    import nirtorch
    from spikingjelly.activation_based import neuron

    def if_node(module):
        return nir.IF(r=np.ones(1), v_threshold=np.array([module.v_threshold]), v_reset=np.zeros(1))

    snn = convert(mlp_checkpoint, torch.randn(100, 6), T=12)
    graph = nirtorch.torch_to_nir(snn.as_sequential(), {neuron.IFNode: if_node}, type_check=False)
    order = ["input_1", "_0", "_1", "_2", "_3", "_4", "output"]
    assert graph.edges == list(zip(order[:-1], order[1:]))
    assert [type(graph.nodes[name]).__name__ for name in order] == ["Input", "Affine", "IF", "Affine", "IF", "Affine",
                                                                    "Output"]
    np.testing.assert_array_equal(graph.nodes["_2"].weight, snn.synapses[1][0].weight.detach().numpy())


def test_readouts_at_no_T_is_refused(mlp_checkpoint):
    snn = convert(mlp_checkpoint, torch.randn(50, 6), T=8)
    with pytest.raises(ConfigError, match="readouts_at needs at least one T"):
        snn.readouts_at(torch.randn(2, 6), [])
