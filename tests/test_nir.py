"""NIR export (`dqn2snn_plugin.io.nir_graph`) and the framework loaders (`dqn2snn_plugin.adapters.nir`).

Exact checks on real Breakout states: the graph read back from its file, run by each framework's own
importer (with our corrections) and by a plain NIR interpreter written here, spikes neuron for
neuron as ours (float64, so that float32 rounding never decides a tie at the threshold).
"""

from __future__ import annotations

from functools import lru_cache

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dqn2snn_plugin import NirError, convert, from_nir, save_nir, to_nir
from dqn2snn_plugin.adapters.nir import load_nir, run_nir
from dqn2snn_plugin.errors import ResultsError
from dqn2snn_plugin.io.quantisation import quantise
from conftest import atari_checkpoint

# (T, channel_wise, initial membrane): each factor at both levels, each level with both of the others
CASES = [(16, False, "zero"), (16, True, "half"), (64, False, "half"), (64, True, "zero")]
FRAMEWORKS = ["spikingjelly", "snntorch", "sinabs"]


@pytest.fixture(scope="module")
def states(atari_observations):
    """Three states to calibrate on, two held out to compare on."""
    return atari_observations[:3], atari_observations[4:]


@pytest.fixture(scope="module")
def exported(states, tmp_path_factory):
    """case -> (our float64 SNN, its .nir file, our readout and spike counts per neuron on the held-out states)."""
    calibration, held_out = states

    @lru_cache(maxsize=None)
    def get(case):
        T, channel_wise, v0 = case
        snn = convert(atari_checkpoint(), calibration, percentile=99.9, channel_wise=channel_wise,
                      initial_membrane=v0, T=T).double()
        path = tmp_path_factory.mktemp("nir") / "snn.nir"
        save_nir(snn, path)
        return snn, path, *our_counts(snn, held_out)

    return get


def our_counts(snn, obs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Our readout [B, n_actions] and each hidden layer's spike count per neuron [B, ...]."""
    counts, run = {}, snn.backend.run

    def recording(neuron, current, v):
        spikes, v = run(neuron, current, v)
        counts[id(neuron)] = counts.get(id(neuron), 0) + spikes.sum(0)
        return spikes, v

    snn.backend.run = recording
    snn.backend.scan_threshold = lambda neuron, current: None  # each layer through run, not one fused C call
    try:
        q = snn(obs)
    finally:
        del snn.backend.run, snn.backend.scan_threshold
    return q, [counts[id(neuron)] for neuron in snn.neurons]


@pytest.mark.parametrize("case", CASES, ids=[f"T{T}-{'channel' if c else 'layer'}-{v}" for T, c, v in CASES])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_framework_spikes_exactly_as_ours(framework, case, exported, states):
    if framework == "sinabs":
        pytest.importorskip("sinabs", reason="Sinabs is optional: pip install --no-deps sinabs pbr")
    snn, path, q, ours = exported(case)
    net = load_nir(path, framework, dtype=torch.float64)
    total, theirs = run_nir(net, states[1])
    assert list(theirs) == ["if0", "if1", "if2", "if3"]
    for layer, (mine, other) in enumerate(zip(ours, theirs.values())):
        assert torch.equal(mine, other), f"layer {layer}: {int((mine != other).sum())} neurons differ"
    torch.testing.assert_close(total / snn.T, q, rtol=0, atol=1e-9)
    assert torch.equal(total.argmax(1), q.argmax(1))


def test_spikingjelly_as_imported_resets_to_zero_and_differs(exported, states):
    """The correction matters: SpikingJelly's own import (reset to zero) does not spike as ours."""
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    snn, path, _, ours = exported(CASES[0])
    net = load_nir(path, "spikingjelly", dtype=torch.float64)
    plain = import_from_nir(nir.read(path), dt=1.0, dtype=torch.float64)
    for name in net.nir_import.neurons:  # the same module with the importer's hard reset
        hard = next(m for m in plain.get_submodule(name).modules() if isinstance(m, neuron.IFNode))
        setattr(net, name, plain.get_submodule(name))
        assert hard.v_reset == 0.0
    _, theirs = run_nir(net, states[1])
    assert not torch.equal(ours[0], theirs["if0"])


def simulate(graph: nir.NIRGraph, obs: np.ndarray, T: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A plain NIR interpreter, independent of ours: each node's own fields, the IF rule from its metadata."""
    following = dict(graph.edges)
    order = [next(n for n, node in graph.nodes.items() if isinstance(node, nir.Input))]
    while order[-1] in following:
        order.append(following[order[-1]])
    x = torch.as_tensor(obs, dtype=torch.float64)
    membranes = {n: torch.full((len(x), *graph.nodes[n].r.shape), float(graph.nodes[n].metadata["v_init"]),
                               dtype=torch.float64) for n in order if isinstance(graph.nodes[n], nir.IF)}
    counts = {n: torch.zeros_like(v) for n, v in membranes.items()}
    total = 0.0
    for _ in range(T):
        h = x
        for name in order[1:-1]:
            node = graph.nodes[name]
            if isinstance(node, nir.Conv2d):
                h = F.conv2d(h, torch.as_tensor(node.weight), torch.as_tensor(node.bias), tuple(node.stride),
                             tuple(node.padding), tuple(node.dilation))
            elif isinstance(node, nir.Affine):
                h = h @ torch.as_tensor(node.weight).T + torch.as_tensor(node.bias)
            elif isinstance(node, nir.Flatten):
                h = h.flatten(node.start_dim + 1)
            else:
                assert node.metadata["reset"] == "subtract" and node.metadata["spike_condition"] == "v >= v_threshold"
                threshold = torch.as_tensor(node.v_threshold)
                membranes[name] += torch.as_tensor(node.r) * h  # dt = 1
                h = (membranes[name] >= threshold).double()
                membranes[name] -= h * threshold
                counts[name] += h
        total = total + h
    return total, counts


@pytest.mark.parametrize("case", [CASES[1], CASES[2]], ids=["T16-channel-half", "T64-layer-half"])
def test_an_independent_nir_interpreter_acts_as_ours(case, exported, states):
    snn, path, q, ours = exported(case)
    graph = nir.read(path)
    total, counts = simulate(graph, states[1], int(graph.metadata["T"]))
    assert torch.equal(total.argmax(1), q.argmax(1))
    assert all(torch.equal(mine, other) for mine, other in zip(ours, counts.values()))


def test_round_trip_through_the_file_gives_the_same_snn(states, tmp_path):
    calibration, held_out = states
    snn = convert(atari_checkpoint(), calibration, percentile="max", channel_wise=True, initial_membrane="half", T=24)
    snn.shift_bias(1, torch.linspace(-0.2, 0.2, 64))  # a tuned SNN's bias correction goes into the weights
    save_nir(snn, tmp_path / "snn.nir", provenance={"checkpoint": "breakout", "missing": None})
    back = from_nir(tmp_path / "snn.nir")
    assert (back.T, back.initial_membrane, back.readout, back.scales.output) == (24, 0.5, snn.readout, snn.scales.output)
    assert back.scales.percentile == "max" and back.scales.channel_wise
    for ours, theirs in zip(snn.synapses, back.synapses):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    ours, theirs = snn.readouts(held_out), back.readouts(held_out)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(snn.last_stats.spikes[3], back.last_stats.spikes[3])


def test_graph_says_what_the_numbers_mean(exported):
    snn, path, *_ = exported(CASES[1])
    graph = nir.read(path)
    meta = graph.metadata
    assert (int(meta["T"]), float(meta["dt"]), meta["coding"], float(meta["v_init"])) == (16, 1.0, "rate", 0.5)
    assert "argmax" in meta["readout"] and "0-255" in meta["input"]
    assert [type(graph.nodes[n]).__name__ for n in ("input", "conv0", "if0", "flatten3", "affine4", "output")] == [
        "Input", "Conv2d", "IF", "Flatten", "Affine", "Output"]
    assert list(graph.nodes["input"].input_type["input"]) == [4, 84, 84]
    ifs = [node for node in graph.nodes.values() if isinstance(node, nir.IF)]
    assert len(ifs) == 4 and all(node.metadata["reset"] == "subtract" for node in ifs)
    assert all(int(node.metadata["max_spikes_per_step"]) == 1 and np.all(node.v_reset == 0) for node in ifs)
    assert ("affine4", "output") in graph.edges  # the readout does not spike


def test_binary_coding_and_poisson_input_are_refused(states):
    calibration, _ = states
    binary = convert(atari_checkpoint(), calibration, coding="binary", T=8)
    with pytest.raises(NirError, match="binary spike coding cannot be written as NIR.*coding='rate'"):
        to_nir(binary)
    poisson = convert(atari_checkpoint(), calibration, input_coding="poisson", T=8)
    with pytest.raises(NirError, match="Poisson"):
        to_nir(poisson)


def test_bad_files_and_foreign_graphs_are_refused(tmp_path):
    (tmp_path / "junk.nir").write_text("not hdf5")
    with pytest.raises(NirError, match="not a readable NIR file"):
        from_nir(tmp_path / "junk.nir")
    leaky = nir.NIRGraph.from_list(nir.Input(np.array([3])), nir.Affine(np.ones((2, 3)), np.zeros(2)),
                                   nir.IF(r=np.full(2, 2.0), v_threshold=np.ones(2)), nir.Affine(np.ones((2, 2)), np.zeros(2)),
                                   nir.Output(np.array([2])))
    with pytest.raises(NirError, match="has r != 1.0"):
        from_nir(leaky)


def test_quantisation_puts_weights_on_a_symmetric_integer_grid():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 2, 2)) * np.array([1, 0.01, 5, 0]).reshape(4, 1, 1, 1)
    bias = rng.normal(size=4)
    for per_channel in (False, True):
        grid = quantise(weight, bias, 4, per_channel)
        step = grid.step.reshape(-1, 1, 1, 1) if per_channel else grid.step
        integers = grid.weight / step
        np.testing.assert_allclose(integers, np.rint(integers), atol=1e-9)
        assert np.abs(np.rint(integers)).max() <= 7 and np.all(grid.weight[3] == 0)
        np.testing.assert_allclose(grid.bias / grid.step.reshape(-1) if per_channel else grid.bias / grid.step,
                                   np.rint(grid.bias / (grid.step.reshape(-1) if per_channel else grid.step)), atol=1e-9)
        assert np.abs(grid.weight - weight).max() <= np.max(step) / 2 + 1e-12
    # per channel, the small channel keeps its resolution; per layer it rounds to zero
    assert np.any(quantise(weight, bias, 4, True).weight[1] != 0) and np.all(quantise(weight, bias, 4, False).weight[1] == 0)


def test_quantised_export_runs_everywhere(exported, states):
    snn, *_ = exported(CASES[0])
    graph = to_nir(snn, weight_bits=8, per_channel=True)
    conv = graph.nodes["conv0"]
    assert int(conv.metadata["weight_bits"]) == 8 and len(conv.metadata["weight_step"]) == 32
    integers = conv.weight / np.asarray(conv.metadata["weight_step"]).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(integers, np.rint(integers), atol=1e-6)
    ours = from_nir(graph)(states[1])
    total, _ = run_nir(load_nir(graph, "snntorch", dtype=torch.float64), states[1])
    torch.testing.assert_close(total / snn.T, ours, rtol=0, atol=1e-9)
    with pytest.raises(Exception, match="weight_bits must be an integer from 2 to 16"):
        to_nir(snn, weight_bits=1)


def test_a_failed_write_leaves_no_file(exported, tmp_path, monkeypatch):
    snn, *_ = exported(CASES[0])

    def fail(path, graph):
        open(path, "w").write("half")
        raise OSError("disk full")

    monkeypatch.setattr(nir, "write", fail)
    with pytest.raises(ResultsError, match="disk full"):  # results.write_file names the file
        save_nir(snn, tmp_path / "snn.nir")
    assert list(tmp_path.iterdir()) == []


def _threshold_graph(v_init: float) -> nir.NIRGraph:
    """Input -> identity -> IF -> identity -> Output, three neurons: inputs that reach v = 1 exactly."""
    from dqn2snn_plugin.io.nir_graph import _if_node

    nodes = {"input": nir.Input(np.array([3])), "affine0": nir.Affine(np.eye(3), np.zeros(3)),
             "if0": _if_node((3,), v_init, torch.float64), "affine1": nir.Affine(np.eye(3), np.zeros(3)),
             "output": nir.Output(np.array([3]))}
    chain = list(nodes)
    return nir.NIRGraph(nodes, list(zip(chain[:-1], chain[1:])), metadata={"T": 4, "v_init": v_init})


@pytest.mark.parametrize("framework", ["spikingjelly", "snntorch"])
def test_a_membrane_exactly_at_the_threshold_fires_in_every_framework(framework):
    """Real float64 frames never land exactly on v = 1; this hand-made graph does (the inputs are exact
    in binary). Counted by hand over T = 4 steps (v += x; spike if v >= 1, then v -= 1):
    v_init 0:   0.5: 0.5, 1 (spike), 0.5, 1 (spike) -> 2;  0.25: 0.25, 0.5, 0.75, 1 (spike) -> 1;
                0.75: 0.75, 1.5 (spike), 1.25 (spike), 1 (spike) -> 3 (a reset to zero instead: 2)
    v_init 0.5: 0.5: 1 (spike), 0.5, 1 (spike), 0.5 -> 2;  0.25: 0.75, 1 (spike), 0.25, 0.5 -> 1;
                0.75: 1.25 (spike), 1 (spike), 0.75, 1.5 (spike) -> 3
    Firing on v > 1 instead gives 1, 0, 2 (v_init 0)."""
    for v_init in (0.0, 0.5):
        net = load_nir(_threshold_graph(v_init), framework, dtype=torch.float64)
        total, counts = run_nir(net, np.array([[0.5, 0.25, 0.75]]))
        assert counts["if0"].tolist() == [[2.0, 1.0, 3.0]] and total.tolist() == [[2.0, 1.0, 3.0]]
    # v_init 0.5: 0.25 -> 1 spike (above); 0.125: 0.625, 0.75, 0.875, 1 (spike) -> 1. From v_init 0: 1 and 0
    net = load_nir(_threshold_graph(0.5), framework, dtype=torch.float64)
    assert run_nir(net, np.array([[0.25, 0.125, 0.0]]))[1]["if0"].tolist() == [[1.0, 1.0, 0.0]]
