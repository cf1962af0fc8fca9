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
from dqn2snn_plugin.errors import ConfigError, ResultsError
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


# ---------------------------------------------------------------- malformed graphs (issue 24, items 11, 13, 14)

def mlp_graph() -> nir.NIRGraph:
    """The NIR graph of a small rate-coded MLP SNN: input, affine0, if0, affine1, if1, affine2, output."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 48), torch.nn.ReLU(), torch.nn.Linear(48, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 4))
    return to_nir(convert(net, torch.randn(100, 6), T=12, channel_wise=True))


def _node(name, value):
    return lambda g: g.nodes.__setitem__(name, value(g.nodes[name]) if callable(value) else value)


def _field(name, field, value):
    return lambda g: setattr(g.nodes[name], field, value(getattr(g.nodes[name], field)))


def _meta(*keys_and_value):
    *keys, value = keys_and_value

    def edit(g):
        target = g.metadata
        for key in keys[:-1]:
            target = target[key]
        if value is None:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return edit


def _inserted(node):
    """`node` put between if0 and affine1."""
    def edit(g):
        g.nodes["extra"] = node
        g.edges[:] = [e for e in g.edges if e != ("if0", "affine1")] + [("if0", "extra"), ("extra", "affine1")]
    return edit


NAN = float("nan")
MALFORMED = [
    (_field("affine0", "bias", lambda b: b[:5]), "node 'affine0' has 5 float32 biases for 48 float32 outputs"),
    (_node("affine0", nir.Conv2d(None, np.ones((48, 6, 3), np.float32), 1, 0, 1, 1, np.zeros(48, np.float32))),
     r"node 'affine0' weight has shape \(48, 6, 3\): expected 4 dimensions"),
    (_field("affine0", "weight", lambda w: w.astype(np.int64)), "node 'affine0' weight holds int64 values"),
    (_field("affine0", "weight", lambda w: w.astype(np.float16)), "node 'affine0' weight holds float16 values"),
    (_field("affine1", "weight", lambda w: np.full_like(w, NAN)), "node 'affine1' weight holds NaN or infinite"),
    (_field("affine2", "bias", lambda b: b.astype(np.float64)), "has 4 float64 biases for 4 float32 outputs"),
    (_meta("T", "abc"), "T .* must be a positive integer, got 'abc'"),
    (_meta("T", 0), "must be a positive integer, got 0"),
    (_meta("T", 10**9), "T = 1000000000 time steps per decision is beyond any use"),
    (_meta("our_readout", "bogus"), "readout 'bogus' is not one of"),
    (_meta("v_init", NAN), r"v_init nan must be a number in \[0, 1\)"),
    (lambda g: g.nodes["if1"].metadata.__setitem__("v_init", 0.5), "start from different membranes"),
    (_meta("scales", "hidden", "0", None), "metadata scales lack or hold a bad '0'"),
    (_meta("scales", "hidden", "1", "abc"), "metadata scales lack or hold a bad"),
    (_meta("scales", "output", None), "metadata scales lack or hold a bad 'output'"),
    (_meta("scales", "output", 0.0), "scales.output is 0.0"),
    (_meta("scales", "hidden", "0", [NAN] * 48), r"scales.hidden\[0\] holds NaN or infinite values"),
    (_meta("scales", "hidden", "1", [1.0] * 5), r"scales.hidden\[1\] has shape \(5,\)"),
    (_inserted(nir.Threshold(np.ones(48))), "node 'extra' is a nir.Threshold"),
    (_inserted(nir.Scale(np.ones(48))), "node 'extra' is a nir.Scale"),
    (_inserted(nir.LIF(tau=np.ones(48), r=np.ones(48), v_leak=np.zeros(48), v_threshold=np.ones(48))),
     "node 'extra' is a nir.LIF"),
    (_inserted(nir.NIRGraph.from_list(nir.Affine(np.eye(48, dtype=np.float32), np.zeros(48, np.float32)))),
     "node 'extra' is a nir.NIRGraph"),
    (_node("output", nir.Output(np.array([5]))), "the network has 4 outputs but the action space has 5 actions"),
    (_node("input", nir.Input(np.array([7]))), r"observation shape \(7,\)"),
    (_node("output", nir.Output(np.array([2, 2]))), r"the Output node has shape \(2, 2\)"),
    (_node("if0", nir.IF(r=np.ones(40), v_threshold=np.ones(40), v_reset=np.zeros(40))),
     r"IF node 'if0' has shape \(40,\) but its input has \(48,\)"),
]


@pytest.mark.parametrize("edit, message", MALFORMED, ids=[m[:40] for _, m in MALFORMED])
@pytest.mark.parametrize("entry", ["from_nir", "load_nir"])
def test_malformed_graphs_are_refused_the_same_way_by_every_entry(entry, edit, message):
    graph = mlp_graph()
    edit(graph)
    with pytest.raises(NirError, match=rf"^the NIR graph: .*{message}"):
        from_nir(graph) if entry == "from_nir" else load_nir(graph, "snntorch")


def test_a_malformed_file_is_named(tmp_path):
    graph = mlp_graph()
    graph.metadata["T"] = 0
    nir.write(tmp_path / "bad.nir", graph)
    with pytest.raises(NirError, match=rf"^{tmp_path / 'bad.nir'}: T .* got 0"):
        load_nir(tmp_path / "bad.nir")


@pytest.mark.parametrize("T", [0, -1, 2.7, 200_000])
def test_run_nir_refuses_a_T_it_cannot_run(T):
    module = load_nir(mlp_graph(), "snntorch")
    with pytest.raises(ConfigError, match="T .* must be a positive integer|beyond any use"):
        run_nir(module, np.zeros((2, 6), np.float32), T=T)


def test_run_nir_refuses_what_does_not_fit_in_memory_plain_modules_and_integer_dtypes(monkeypatch):
    from dqn2snn_plugin.io import checks

    module = load_nir(mlp_graph(), "spikingjelly")
    obs = np.zeros((100, 6), np.float32)
    run_nir(module, obs, T=10)  # 10 steps x 100 observations x (6 + 2 x 80) values x 4 bytes = 664,000 bytes
    monkeypatch.setattr(checks, "memory_bytes", lambda: 664_000)
    run_nir(module, obs, T=10)
    with pytest.raises(ConfigError, match=r"run_nir of 100 observations at T = 11 .* needs about 0\.0 GiB"):
        run_nir(module, obs, T=11)
    with pytest.raises(ConfigError, match="run_nir runs a module made by load_nir, not a Linear"):
        run_nir(torch.nn.Linear(6, 4), obs)
    with pytest.raises(ConfigError, match="dtype must be torch.float32 or torch.float64, got torch.int32"):
        load_nir(mlp_graph(), dtype=torch.int32)


def test_save_nir_refuses_a_missing_folder_a_folder_and_values_hdf5_cannot_hold(tmp_path):
    torch.manual_seed(0)
    snn = from_nir(mlp_graph())
    with pytest.raises(ResultsError, match="the folder .*missing does not exist"):
        save_nir(snn, tmp_path / "missing" / "snn.nir")
    with pytest.raises(ResultsError, match="is a folder: save the NIR graph to a file path such as"):
        save_nir(snn, tmp_path)
    for provenance, field in (({"x": object()}, r"provenance\['x'\] is a object"),
                              ({"x": {"y": [1, "a"]}}, r"provenance\['x'\]\['y'\] is a list"),
                              ({"x": torch.ones(2)}, r"provenance\['x'\] is a Tensor"),
                              ({1: "a"}, "provenance has a key that is not a string")):
        with pytest.raises(ConfigError, match=field):
            save_nir(snn, tmp_path / "snn.nir", provenance=provenance)
    assert list(tmp_path.iterdir()) == []
    save_nir(snn, tmp_path / "snn.nir", provenance={"x": {"y": None, "z": [1, 2.5]}, "w": None})
    assert nir.read(tmp_path / "snn.nir").metadata["provenance"]["x"]["z"].tolist() == [1, 2.5]


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
