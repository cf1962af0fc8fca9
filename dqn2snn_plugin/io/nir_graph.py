"""The converted SNN as a NIR graph (Neuromorphic Intermediate Representation, PyPI `nir`): `to_nir`,
`from_nir`, `save_nir`.

The graph is a chain Input -> (Conv2d | Affine | Flatten)* -> IF -> ... -> Affine -> Output:
- Input: the observation exactly as the environment gives it (Atari: uint8 pixels 0-255 as numbers),
  injected unchanged at every time step (analog input); SB3's /255 is folded into the first layer.
- Conv2d / Affine: the folded weights W * lambda_in / lambda_out, b / lambda_out, including a tuned SNN's
  bias shifts and a distilled copy's thresholds; optionally on a b-bit integer grid (`weight_bits`).
- IF: r = 1, v_threshold = 1, v_reset = 0 per neuron. With NIR's dt = 1 (one NIR time unit is one
  simulation step) the IF integrates v += I per step. NIR is continuous-time, where resetting to zero
  and subtracting the threshold coincide; in time steps they differ, and NIR has no field for it, so
  each IF node's metadata records ours: reset by subtraction (v -= 1 after a spike), at most one spike
  per step, spike when v >= 1 (NIR's definition says v > threshold), and the initial membrane v_init.
- The readout is not spiking: the last Affine feeds the Output, whose values summed over the T steps
  (argmax, ties to the lowest index) are the action. Our robust readout N + V is exactly this integral.
Graph metadata holds T, the readout, the coding, the scales and where the network came from.

Binary coding (threshold halving and membrane doubling between steps) and Poisson input (random
spike trains) have no NIR form: `to_nir` refuses them with `NirError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from dqn2snn_plugin import __version__
from dqn2snn_plugin.conversion import make_backend
from dqn2snn_plugin.errors import ConfigError, NirError
from dqn2snn_plugin.io.checks import (
    activation_shapes, check_observation_shape, check_run_options, check_scales, check_shapes, check_tensor,
)
from dqn2snn_plugin.normalization import SYNAPSES, LayerScales
from dqn2snn_plugin.io.quantisation import quantise
from dqn2snn_plugin.io.results import check_save_path, write_file
from dqn2snn_plugin.network import SpikingQNetwork

FORMAT = "dqn2snn-nir-v1"
READOUT = "sum of the Output node over the T steps, then argmax (ties: lowest index)"
NODE_NAMES = {nn.Conv2d: "conv", nn.Linear: "affine", nn.Flatten: "flatten"}
IF_RULE = "per step: v += I; spike if v >= v_threshold (at most one spike); after a spike v -= v_threshold"


def to_nir(snn: SpikingQNetwork, *, weight_bits: int | None = None, per_channel: bool = False,
           provenance: dict | None = None) -> nir.NIRGraph:
    """The NIR graph of a rate-coded `snn` (see the module docstring for what each node holds).

    Args:
        weight_bits: None keeps the float weights; b in 2..16 puts each Conv2d / Affine on a symmetric
            b-bit integer grid (see `dqn2snn_plugin.io.quantisation`), recorded in the node's metadata.
        per_channel: with `weight_bits`, one integer step per output channel instead of per layer.
        provenance: facts stored in the graph's metadata (checkpoint file, its digest, ...): strings,
            numbers, lists or dicts of them (HDF5 has no None: None values are left out).
    """
    _check_exportable(snn)
    if provenance is not None and not isinstance(provenance, dict):
        raise ConfigError(f"provenance must be a dict of facts, got a {type(provenance).__name__}")
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(np.array(snn.observation_shape))}
    chain = ["input"]
    weight = next(snn.synapses[0].parameters())  # MLP policies start with a Flatten
    x = torch.zeros(1, *snn.observation_shape, dtype=weight.dtype, device=weight.device)  # for the shapes
    with torch.no_grad():
        for stage_index, stage in enumerate(snn.synapses):
            for layer in stage:
                name = f"{NODE_NAMES[type(layer)]}{stage_index}"
                nodes[name] = _node(layer, tuple(x.shape[1:]), weight_bits, per_channel)
                chain.append(name)
                x = layer(x)
            if stage_index < len(snn.neurons):
                nodes[f"if{stage_index}"] = _if_node(tuple(x.shape[1:]), snn.initial_membrane, x.dtype)
                chain.append(f"if{stage_index}")
    nodes["output"] = nir.Output(np.array([snn.n_actions]))
    chain.append("output")
    metadata = {
        "format": FORMAT, "dqn2snn_version": __version__, "T": snn.T, "dt": 1.0,
        "time": "dt = 1: one NIR time unit is one simulation step", "coding": "rate", "readout": READOUT,
        "our_readout": snn.readout,
        "input": "the raw observation as the environment gives it (Atari: pixels 0-255), the same at every step",
        "v_init": snn.initial_membrane, "weight_bits": weight_bits or 0,
        "weight_grid": "float" if weight_bits is None else ("per channel" if per_channel else "per layer"),
        "scales": _scales_metadata(snn.scales),
        "provenance": _plain_provenance(provenance or {}, "provenance"),
    }
    return nir.NIRGraph(nodes, list(zip(chain[:-1], chain[1:])), metadata=metadata)


def save_nir(snn: SpikingQNetwork, path: str | Path, **options) -> nir.NIRGraph:
    """Write `to_nir(snn, **options)` to `path` atomically (whole or not at all); return the graph.
    ResultsError, before the graph is made, for a folder or a file in a folder that does not exist."""
    path = check_save_path(path, "NIR graph", "snn.nir")
    graph = to_nir(snn, **options)
    write_file(path, lambda tmp: nir.write(tmp, graph))
    return graph


def read_graph(graph_or_path: nir.NIRGraph | str | Path) -> nir.NIRGraph:
    """A NIR graph as given, or read from its file (NirError if it cannot be read)."""
    if isinstance(graph_or_path, nir.NIRGraph):
        return graph_or_path
    try:
        return nir.read(graph_or_path)
    except Exception as exc:  # h5py and nir raise many unrelated types for a bad file
        raise NirError(f"{graph_or_path}: not a readable NIR file ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class GraphParts:
    """A graph written by `to_nir`, checked (`checked_graph`): what `from_nir` and `load_nir` build from."""

    graph: nir.NIRGraph
    stages: list[nn.Sequential]  # the torch layers between IF nodes, built from the graph's weights
    neurons: dict[str, tuple[int, ...]]  # IF node name -> its shape (no batch)
    observation_shape: tuple[int, ...]
    scales: LayerScales
    T: int
    readout: str
    v_init: float


def checked_graph(graph_or_path: nir.NIRGraph | str | Path) -> GraphParts:
    """Read and check a graph before anything is built from it, with the same checks for every way in
    (`io.checks`): one chain of Conv2d / Affine / Flatten / IF nodes, each stage between IF nodes one
    Conv2d or Affine; finite float32 / float64 weights (one dtype), biases of the right length, shapes
    that fit each other (worked out without memory), the Input's observation shape and the Output's
    action count; our IF neurons; T, readout, v_init and scales in range. NirError naming the field."""
    graph = read_graph(graph_or_path)
    where = str(graph_or_path) if not isinstance(graph_or_path, nir.NIRGraph) else "the NIR graph"
    try:
        chain = chain_of(graph)
        for name in chain:
            if isinstance(graph.nodes[name], nir.IF):
                check_if(name, graph.nodes[name])
    except NirError as exc:
        raise NirError(f"{where}: {exc}") from None
    metadata = plain(graph.metadata)
    if not isinstance(metadata, dict):
        raise NirError(f"{where}: its metadata is not a mapping")
    observation_shape = check_observation_shape(_shape(graph.nodes[chain[0]], "input"), where, NirError)
    stages, layers, neurons, v_inits = [], [], {}, []
    x_shape = observation_shape
    for name in chain[1:-1]:
        node = graph.nodes[name]
        if isinstance(node, nir.IF):
            neurons[name] = _shape(node, "input")
            if neurons[name] != x_shape:
                raise NirError(f"{where}: IF node {name!r} has shape {neurons[name]} but its input has {x_shape}")
            v_inits.append(plain(node.metadata).get("v_init", 0.0) if isinstance(node.metadata, dict) else 0.0)
            stages.append(layers)
            layers = []
        else:
            layer = _torch_layer(name, node, where)
            x_shape = activation_shapes(nn.Sequential(*[m for stage in stages for m in stage], *layers, layer),
                                        observation_shape, where, NirError)[-1]
            layers.append(layer)
    stages.append(layers)
    for index, stage in enumerate(stages):
        if sum(isinstance(layer, SYNAPSES) for layer in stage) != 1:
            raise NirError(f"{where}: stage {index} (between IF nodes) holds {[type(m).__name__ for m in stage]}: "
                           "expected exactly one Conv2d or Affine")
    dtypes = {layer.weight.dtype for stage in stages for layer in stage if isinstance(layer, SYNAPSES)}
    if len(dtypes) > 1:
        raise NirError(f"{where}: its weights mix {sorted(map(str, dtypes))}: expected one dtype")
    actions = _shape(graph.nodes[chain[-1]], "output")
    if len(actions) != 1:
        raise NirError(f"{where}: the Output node has shape {actions}: expected one value per action")
    check_shapes(nn.Sequential(*[m for stage in stages for m in stage]), observation_shape, actions[0], where, NirError)
    if "v_init" in metadata:
        v_inits.append(metadata["v_init"])
    runs = [check_run_options(where, NirError, T=metadata.get("T", 64), readout=metadata.get("our_readout",
                              "spikes+membrane"), v_init=v) for v in v_inits or [0.0]]
    if len({v for _, _, v in runs}) > 1:
        raise NirError(f"{where}: the IF layers start from different membranes {sorted({v for _, _, v in runs})}: "
                       "not a dqn2snn graph")
    T, readout, v_init = runs[0]
    channels = [next(m for m in stage if isinstance(m, SYNAPSES)).weight.shape[0] for stage in stages[:-1]]
    scales = check_scales(_scales_of(metadata.get("scales"), len(channels), where), channels, where, NirError)
    return GraphParts(graph, [nn.Sequential(*stage) for stage in stages], neurons, observation_shape, scales, T,
                      readout, v_init)


def from_nir(graph_or_path: nir.NIRGraph | str | Path, *, backend: str = "spikingjelly") -> SpikingQNetwork:
    """Our `SpikingQNetwork` from a graph written by `to_nir` (or its file); it simulates exactly the same.

    The graph's weights are used as they are (already folded); its scales, T and readout come back from
    the metadata. `backend` picks the neurons, as in `convert`. The graph is checked first (`checked_graph`).
    """
    neuron_backend = make_backend(backend)
    parts = checked_graph(graph_or_path)
    v0 = parts.v_init
    return SpikingQNetwork(
        parts.stages, [neuron_backend.make_neuron(v0) for _ in parts.stages[1:]], neuron_backend.make_neuron(v0),
        neuron_backend, parts.scales, parts.observation_shape, initial_membrane=v0, readout=parts.readout, T=parts.T,
    )


def _shape(node: nir.NIRNode, port: str) -> tuple[int, ...]:
    """The shape of a node's input or output port (NirError if it is not a list of integers)."""
    types = node.input_type if port == "input" else node.output_type
    try:
        return tuple(int(d) for d in np.ravel(types[port]))
    except (KeyError, TypeError, ValueError):
        raise NirError(f"the {type(node).__name__} node has no {port} shape of integers") from None


def chain_of(graph: nir.NIRGraph) -> list[str]:
    """Node names from the Input to the Output; NirError unless the graph is one chain."""
    following = {}
    for source, target in graph.edges:
        if source in following:
            raise NirError(f"node {source!r} feeds several nodes: only a chain of layers can be rebuilt")
        following[source] = target
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise NirError(f"the graph has {len(inputs)} Input nodes, expected one")
    chain = inputs
    while chain[-1] in following and len(chain) <= len(graph.nodes):
        chain.append(following[chain[-1]])
    if not isinstance(graph.nodes[chain[-1]], nir.Output) or len(chain) != len(graph.nodes):
        raise NirError("the graph is not one chain from its Input to its Output")
    return chain


def check_if(name: str, node: nir.IF) -> None:
    """Our IF nodes: r = 1, threshold 1, reset to 0 (NirError for anything else)."""
    for field, expected in (("r", 1.0), ("v_threshold", 1.0), ("v_reset", 0.0)):
        if not np.all(np.asarray(getattr(node, field)) == expected):
            raise NirError(f"IF node {name!r} has {field} != {expected}: not written by dqn2snn's to_nir")


def plain(value):
    """Metadata as read back by `nir.read` (numpy scalars and arrays) as plain Python values."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def _plain_provenance(value: object, field: str) -> object:
    """`value` if HDF5 can store it: a string, a number, a list of numbers or of strings, a dict (string
    keys) of such; None values in dicts are left out (HDF5 has no None). ConfigError naming the field."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ConfigError(f"{field} has a key that is not a string: {sorted(map(repr, value))[:3]}")
        return {key: _plain_provenance(item, f"{field}[{key!r}]") for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)) and (all(isinstance(item, str) for item in value) or all(
            isinstance(item, (int, float)) for item in value)):
        return list(value)
    if isinstance(value, (str, int, float)):
        return value
    raise ConfigError(f"{field} is a {type(value).__name__}: NIR metadata holds strings, numbers, lists of numbers "
                      "or of strings, and dicts of them")


def _check_exportable(snn: SpikingQNetwork) -> None:
    if not snn.coding.nir_exportable:
        raise NirError(
            f"{snn.coding} spike coding cannot be written as NIR: {snn.coding.why_not_nir}; export a rate-coded SNN "
            "instead (convert(..., coding='rate'), or distill(..., coding='rate') for few time steps)"
        )
    if snn.input_coding != "analog":
        raise NirError("Poisson input coding is random and has no NIR form: export an SNN with input_coding='analog'")


def _node(layer: nn.Module, input_shape: tuple[int, ...], weight_bits: int | None, per_channel: bool) -> nir.NIRNode:
    """The NIR node of one Conv2d / Linear / Flatten, with the shapes NIR wants (no batch dimension)."""
    if isinstance(layer, nn.Flatten):
        start, end = layer.start_dim - 1, layer.end_dim if layer.end_dim < 0 else layer.end_dim - 1
        return nir.Flatten({"input": np.array(input_shape)}, start_dim=start, end_dim=end)
    weight = layer.weight.detach().cpu().numpy().copy()
    bias = layer.bias.detach().cpu().numpy().copy() if layer.bias is not None else np.zeros(len(weight), weight.dtype)
    metadata = {}
    if weight_bits is not None:
        grid = quantise(weight, bias, weight_bits, per_channel)
        weight, bias = grid.weight, grid.bias
        metadata = {"weight_bits": weight_bits, "weight_step": grid.step.tolist(), "bias_bits": grid.bias_bits,
                    "integers": "weight / weight_step and bias / weight_step are integers; threshold 1 / weight_step"}
    if isinstance(layer, nn.Conv2d):
        return nir.Conv2d(input_shape=input_shape[1:], weight=weight, stride=layer.stride, padding=layer.padding,
                          dilation=layer.dilation, groups=layer.groups, bias=bias, metadata=metadata)
    return nir.Affine(weight=weight, bias=bias, metadata=metadata)


def _if_node(shape: tuple[int, ...], v_init: float, dtype: torch.dtype) -> nir.IF:
    ones = np.ones(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    return nir.IF(r=ones, v_threshold=ones.copy(), v_reset=np.zeros_like(ones), metadata={
        "reset": "subtract", "max_spikes_per_step": 1, "spike_condition": "v >= v_threshold", "v_init": v_init,
        "dynamics": IF_RULE,
    })


def _torch_layer(name: str, node: nir.NIRNode, where: str) -> nn.Module:
    """The torch layer of one Conv2d / Affine / Flatten node (in the dtype of its weights), built once
    its weights, bias and settings are checked."""
    if isinstance(node, nir.Flatten):
        start, end = _integers(node, name, where, "start_dim", "end_dim", low=-4, high=3)
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if not isinstance(node, (nir.Conv2d, nir.Affine)):
        raise NirError(f"{where}: node {name!r} is a nir.{type(node).__name__}: from_nir and load_nir rebuild Conv2d, "
                       "Affine, Flatten, IF")
    conv = isinstance(node, nir.Conv2d)
    weight = check_tensor(node.weight, f"node {name!r} weight", where, NirError, ndim=4 if conv else 2)
    bias = check_tensor(node.bias, f"node {name!r} bias", where, NirError, ndim=1)
    if len(bias) != len(weight) or bias.dtype != weight.dtype:
        kinds = [str(t.dtype).removeprefix("torch.") for t in (bias, weight)]
        raise NirError(f"{where}: node {name!r} has {len(bias)} {kinds[0]} biases for {len(weight)} {kinds[1]} outputs")
    if conv:
        if isinstance(node.padding, str) or _integers(node, name, where, "groups", low=1, high=1) != [1]:
            raise NirError(f"{where}: Conv2d node {name!r}: grouped or 'same'/'valid' padded convolutions are not "
                           "supported")
        stride = _integers(node, name, where, "stride", low=1, high=weight.shape[2] * weight.shape[3] + 64)
        padding = _integers(node, name, where, "padding", low=0, high=max(weight.shape[2:]) - 1)
        dilation = _integers(node, name, where, "dilation", low=1, high=64)
        layer = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), tuple(stride), tuple(padding),
                          tuple(dilation), dtype=weight.dtype)
    else:
        layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer.eval()


def _integers(node: nir.NIRNode, name: str, where: str, *fields: str, low: int, high: int) -> list[int]:
    """The integers of `fields` of `node` (a number or a pair each), every one in [low, high]."""
    values = []
    for field in fields:
        raw = np.ravel(np.asarray(getattr(node, field)))
        if raw.dtype.kind not in "iu" or not 1 <= raw.size <= 2 or not all(low <= v <= high for v in raw.tolist()):
            raise NirError(f"{where}: node {name!r} has {field} {raw.tolist()}: expected integers from {low} to {high}")
        values += raw.tolist()
    return values


def _scales_metadata(scales: LayerScales) -> dict:
    return {"hidden": {str(i): s.detach().cpu().tolist() for i, s in enumerate(scales.hidden)},
            "output": scales.output, "percentile": str(scales.percentile), "rank": scales.rank,
            "channel_wise": scales.channel_wise, "n_states": scales.n_states}


def _scales_of(stored: object, n_hidden: int, where: str) -> LayerScales:
    """The scales recorded by `to_nir` (provenance and the spike-count readout's output scale); ones if
    absent; NirError naming the field when one is missing or not a number (`io.checks.check_scales` checks
    their values)."""
    if not stored:
        return LayerScales(tuple(torch.tensor(1.0) for _ in range(n_hidden)), 1.0, "unknown", "nonzero", False, 0)
    try:
        hidden = tuple(torch.tensor(stored["hidden"][str(i)], dtype=torch.float64) for i in range(n_hidden))
        output, n_states = stored["output"], stored["n_states"]
        percentile, rank, channel_wise = stored["percentile"], stored["rank"], stored["channel_wise"]
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise NirError(f"{where}: metadata scales lack or hold a bad {exc}: expected those written by to_nir") from None
    try:
        percentile = float(percentile)
    except (TypeError, ValueError):
        pass  # "max" or "distilled T=..."
    return LayerScales(tuple(h.float() for h in hidden), output, percentile, rank, channel_wise, n_states)
