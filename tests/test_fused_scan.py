"""The compiled C loops against the Python loops they replace (bit-identical spikes and membranes), and
the event-driven synapses and spike bookkeeping against dense layers and tensor operations. How the
library is built, verified and loaded: tests/test_native_build.py."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dqn2snn_plugin import binary_coding
from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.engine.rate import if_scan

needs_compiler = pytest.mark.skipif(fused_scan.compiler() is None, reason="no C compiler on this machine")


@pytest.fixture
def python_loops():
    """Runs a function with the fused path switched off (the reference)."""

    def run(fn, *args):
        with fused_scan.switched_off():
            return fn(*args)

    return run


def awkward_currents(shape, dtype) -> torch.Tensor:
    """Random currents with values that hit the threshold exactly, negatives and saturating steps."""
    g = torch.Generator().manual_seed(1)
    current = torch.randn(shape, generator=g, dtype=dtype) * 0.7
    current.view(-1)[::7] = 0.25  # 4 steps of 0.25 land exactly on the threshold
    current.view(-1)[::11] = 1.5
    return current


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("constant", [False, True], ids=["time-varying", "constant"])
def test_fused_if_scan_equals_the_python_loop(python_loops, dtype, constant):
    shape = (9, 3, 5000)  # more neurons than one C block
    current = awkward_currents(shape, dtype)
    if constant:
        current = current[0].expand(shape)
    v0 = torch.rand(shape[1:], dtype=dtype) - 0.2
    fused = fused_scan.if_scan(current, v0, 1.0)
    assert fused is not None
    reference = python_loops(if_scan, current, v0)
    assert fused[0].sum() > 0 and torch.equal(fused[0], reference[0]) and torch.equal(fused[1], reference[1])
    assert torch.equal(v0, v0.clone()), "the initial membrane must not be modified"


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [1, 4, 8, 24])
@pytest.mark.parametrize("start", [0.0, 0.5])
def test_fused_fire_and_integrate_equal_the_python_loops(python_loops, dtype, bits, start):
    g = torch.Generator().manual_seed(bits)
    v = (torch.rand(2, 4100, generator=g, dtype=dtype) * 1.2 - 0.1) * (2**bits - 1)
    v.view(-1)[::5] = v.view(-1)[::5].round() - start  # exact integers (after the start) sit on the thresholds
    spikes, residual = fused_scan.fire(v, bits, start)
    reference = python_loops(binary_coding.fire, v, bits, start)
    assert torch.equal(spikes, reference[0]) and torch.equal(residual, reference[1])
    current = awkward_currents((bits, 3, 700), dtype)
    assert torch.equal(fused_scan.integrate(current), python_loops(binary_coding.integrate, current))


def test_unsupported_tensors_take_the_python_path():
    half = torch.ones(4, 2, dtype=torch.float16)
    assert fused_scan.if_scan(half, torch.zeros(2, dtype=torch.float16), 1.0) is None
    with torch.enable_grad():
        learnt = torch.ones(4, 2, requires_grad=True)
        assert fused_scan.if_scan(learnt, torch.zeros(2), 1.0) is None
        spikes, _ = if_scan(learnt * 0.5, torch.zeros(2))  # still works, through autograd's path
    assert spikes[:, 0].tolist() == [0, 1, 0, 1]


@needs_compiler
def test_a_binary_breakout_snn_decides_the_same_with_the_fused_loops(atari_observations, python_loops):
    from conftest import atari_checkpoint

    from dqn2snn_plugin import convert

    snn = convert(atari_checkpoint(), atari_observations, coding="binary", T=8)
    snn.options.event_driven = False  # the loops alone: the event-driven synapses are held to the dense pass elsewhere
    fused = snn.readouts(atari_observations, 8)["membrane"], [s.clone() for s in snn.last_stats.spikes]
    reference = python_loops(snn.readouts, atari_observations, 8)["membrane"], snn.last_stats.spikes
    assert torch.equal(fused[0], reference[0])
    assert all(torch.equal(a, b) for a, b in zip(fused[1], reference[1]))


def sparse_input(shape, dtype, rate=0.1, seed=0) -> torch.Tensor:
    """Mostly zeros, the rest 1 or 2 (spikes, or Poisson input of another amplitude); row 0 all zero."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=g) < rate).to(dtype) * torch.randint(1, 3, shape, generator=g).to(dtype)
    x[0] = 0
    return x


def output_last(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().permute(*range(1, layer.weight.ndim), 0).contiguous()


LAYERS = {
    "nature-conv2": (lambda: nn.Conv2d(32, 64, 4, 2), (5, 32, 20, 20)),
    "odd-stride-padding": (lambda: nn.Conv2d(3, 5, (3, 2), (2, 3), (1, 2)), (4, 3, 9, 8)),
    "no-bias": (lambda: nn.Conv2d(2, 3, 3, bias=False), (3, 2, 5, 5)),
    "linear": (lambda: nn.Linear(300, 20), (7, 300)),
}


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(LAYERS))
def test_event_driven_synapses_equal_the_dense_layer(name, dtype):
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = make().to(dtype)
    x = sparse_input(shape, dtype)
    out = fused_scan.events(x, layer, output_last(layer))
    with torch.no_grad():
        dense = layer(x)
    torch.testing.assert_close(out, dense, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    bias = torch.zeros_like(dense[0]) if layer.bias is None else layer.bias.detach().reshape(-1, *[1] * (dense.ndim - 2))
    assert torch.equal(out[0], bias.expand_as(dense[0])), "a row without events is the bias alone"
    threads = torch.get_num_threads()
    try:  # rows are shared among threads: the sums must not depend on how many
        torch.set_num_threads(1)
        one = fused_scan.events(x, layer, output_last(layer))
        torch.set_num_threads(2)
        assert torch.equal(one, fused_scan.events(x, layer, output_last(layer)))
    finally:
        torch.set_num_threads(threads)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make, shape", [(lambda: nn.Conv2d(4, 8, 3, 2, 1), (3, 6, 4, 7, 7)),
                                         (lambda: nn.Linear(40, 70), (3, 6, 40))], ids=["conv", "linear"])
@pytest.mark.parametrize("rows", [6, 1], ids=["batch", "one-row"])  # one row: summed in two plane groups
def test_weighted_spike_planes_sum_the_scaled_layer(dtype, make, shape, rows):
    torch.manual_seed(1)
    layer = make().to(dtype)
    planes = sparse_input(shape, dtype, rate=0.3).clamp(max=1)[:, :rows]  # binary coding: 0/1 spikes per step
    planes[:, 0] = (torch.rand(planes[:, 0].shape) < 0.3).to(dtype)  # row 0 of the input is empty: refill it
    scales = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    out = fused_scan.events(planes, layer, output_last(layer), scales=scales)
    with torch.no_grad():
        dense = sum(float(s) * layer(p) for s, p in zip(scales, planes))
    torch.testing.assert_close(out, dense, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused_scan.events(planes, layer, output_last(layer), scales=scales)
        torch.set_num_threads(2)
        assert torch.equal(one, fused_scan.events(planes, layer, output_last(layer), scales=scales))
    finally:
        torch.set_num_threads(threads)


@needs_compiler
def test_the_event_driven_pass_declines_dense_input_and_layers_it_cannot_read():
    layer = nn.Conv2d(2, 3, 3)
    x = sparse_input((4, 2, 6, 6), torch.float32, rate=0.5)
    wt = output_last(layer)
    nonzero = int(x.count_nonzero())
    assert fused_scan.events(x, layer, wt, max_fraction=nonzero / x.numel()) is not None
    assert fused_scan.events(x, layer, wt, max_fraction=(nonzero - 1) / x.numel()) is None
    for other in (nn.Conv2d(2, 4, 3, groups=2), nn.Conv2d(2, 3, 3, dilation=2), nn.Conv2d(2, 3, 3, padding="same")):
        assert fused_scan.events(x, other, output_last(other)) is None
    assert fused_scan.events(x.half(), layer.half(), wt.half()) is None
    with fused_scan.switched_off():
        assert fused_scan.events(x, layer, wt) is None


@needs_compiler
@pytest.mark.parametrize("shape", [(5, 3, 4, 6, 6), (5, 3, 40)], ids=["conv", "linear"])
def test_tally_counts_what_the_tensor_bookkeeping_counts(shape):
    g = torch.Generator().manual_seed(2)
    spikes = (torch.rand(shape, generator=g) < 0.3).float()
    fan = torch.randint(1, 300, shape[2:], generator=g).float()
    totals, channels, ops = torch.ones(shape[1]), torch.ones(shape[2]), torch.ones(shape[1])
    assert fused_scan.tally(spikes, fan, totals, channels, ops)
    per_neuron = spikes.sum(0)
    assert torch.equal(totals, 1 + per_neuron.flatten(1).sum(1))
    assert torch.equal(channels, 1 + (per_neuron.sum(0).flatten(1).sum(1) if len(shape) > 3 else per_neuron.sum(0)))
    assert torch.equal(ops, 1 + (per_neuron * fan).flatten(1).sum(1))


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fractional_finds_any_value_that_is_not_a_whole_number(dtype):
    frames = torch.randint(0, 256, (3, 4, 84, 84)).to(dtype)
    assert fused_scan.fractional(frames) is False
    assert fused_scan.fractional(torch.tensor([-3.0, 0.0, 1e30, 2.0**40], dtype=dtype)) is False
    for odd in (0.5, -1e-3, float("nan"), float("inf"), -float("inf")):
        spoiled = frames.clone()
        spoiled[2, 3, 83, 83 - int(dtype == torch.float64)] = odd  # last element, or the one before
        assert fused_scan.fractional(spoiled) is True, odd
    assert fused_scan.fractional(frames.half()) is None


@needs_compiler
def test_a_binary_layer_keeps_its_spike_planes_only_where_asked_or_needed():
    torch.manual_seed(3)
    layer = nn.Conv2d(4, 6, 3, 2, 1)
    gate = torch.randint(0, 256, (2, 4, 7, 7)).float()
    fan = torch.ones(4, 7, 7)

    def call(**kw):
        counters = torch.zeros(2), torch.zeros(4), torch.zeros(2)
        return fused_scan.binary_layer(gate, 8, 0.5, fan, *counters, layer, output_last(layer),
                                       torch.tensor([2.0 ** (7 - t) for t in range(8)], dtype=torch.float64), **kw)

    spikes, residual = fused_scan.fire(gate, 8, 0.5)
    lean, kept, dense = call(), call(keep_spikes=True), call(max_fraction=0.0)
    assert lean[0] is None and torch.equal(kept[0], spikes) and torch.equal(dense[0], spikes)
    assert dense[2] is None, "too many spikes: the caller runs the dense pass on the planes"
    assert all(torch.equal(r[1], residual) for r in (lean, kept, dense))
    assert torch.equal(lean[2], kept[2])


@needs_compiler
def test_more_planes_than_a_code_holds_take_the_dense_pass():
    layer = nn.Linear(10, 3)
    planes = (torch.rand(fused_scan.MAX_PLANES + 1, 2, 10) < 0.3).float()
    scales = torch.ones(fused_scan.MAX_PLANES + 1, dtype=torch.float64)
    assert fused_scan.events(planes, layer, output_last(layer), scales=scales) is None
    assert fused_scan.events(planes[:-1], layer, output_last(layer), scales=scales[:-1]) is not None


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_delta_input_sends_the_observations_changes_as_a_dense_pass_of_them_would(dtype):
    torch.manual_seed(5)
    layer = nn.Conv2d(4, 6, 8, 4).double()
    with torch.no_grad():  # weights on a grid of 1/64: every sum below is exact, in any order
        layer.weight.copy_(torch.randint(-50, 50, layer.weight.shape) / 64)
    previous = torch.randint(0, 240, (3, 4, 84, 84)).to(dtype)
    x = previous.clone()
    x[0, 1, 10:13, 20:24] += 7
    x[2, :, 83, 80:] -= 3  # row 1 unchanged
    fan = (torch.arange(4 * 84 * 84) % 5).reshape(4, 84, 84).double()
    membranes = torch.randint(-9, 9, (3, 6, 20, 20)).double()

    def send(x, previous, next_v, max_fraction=1.0):
        counters = torch.zeros(3, 3, dtype=torch.float64)  # events, their fan-outs, neurons reached
        done = fused_scan.delta_input(x, previous, 255, fan, counters[0], counters[1], layer, output_last(layer),
                                      counters[2], next_v, max_fraction)
        return done, counters

    kept, next_v = previous.clone(), membranes.clone()
    done, (events, ops, touched) = send(x, previous, next_v)
    change = (x - kept).double()
    changed = change != 0
    window = F.conv2d(changed.any(1, keepdim=True).double(), torch.ones(1, 1, 8, 8, dtype=torch.float64), stride=4)
    assert done is True and torch.equal(previous, x)
    assert events.tolist() == [12, 0, 16]
    assert torch.equal(ops, (changed * fan).flatten(1).sum(1))
    assert torch.equal(touched, (window > 0).flatten(1).sum(1) * 6.0)
    assert torch.equal(next_v, membranes + F.conv2d(change, layer.weight.detach(), stride=4))

    for odd, max_fraction in ((0.5, 1.0), (256.0, 1.0), (float("nan"), 1.0), (1.0, 0.0)):  # not exact; too many
        spoiled, previous, next_v = x.clone(), kept.clone(), membranes.clone()
        spoiled[1, 0, 0, 0] = odd
        done, counters = send(spoiled, previous, next_v, max_fraction)
        assert done is False and torch.equal(previous, kept) and torch.equal(next_v, membranes), odd
        assert not counters.any()
    linear = nn.Linear(4 * 84 * 84, 3).double()
    assert fused_scan.delta_input(x, kept, 255, fan, *torch.zeros(2, 3, dtype=torch.float64), linear,
                                  output_last(linear), torch.zeros(3, dtype=torch.float64),
                                  torch.zeros(3, 3, dtype=torch.float64)) is None
