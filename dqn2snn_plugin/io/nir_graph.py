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

from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from dqn2snn_plugin import __version__
from dqn2snn_plugin.conversion import make_backend
from dqn2snn_plugin.errors import NirError
from dqn2snn_plugin.normalization import LayerScales
from dqn2snn_plugin.io.quantisation import quantise
from dqn2snn_plugin.io.results import write_file
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
        "provenance": {k: v for k, v in (provenance or {}).items() if v is not None},
    }
    return nir.NIRGraph(nodes, list(zip(chain[:-1], chain[1:])), metadata=metadata)


def save_nir(snn: SpikingQNetwork, path: str | Path, **options) -> nir.NIRGraph:
    """Write `to_nir(snn, **options)` to `path` atomically (whole or not at all); return the graph."""
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


def from_nir(graph_or_path: nir.NIRGraph | str | Path, *, backend: str = "spikingjelly") -> SpikingQNetwork:
    """Our `SpikingQNetwork` from a graph written by `to_nir` (or its file); it simulates exactly the same.

    The graph's weights are used as they are (already folded); its scales, T and readout come back from
    the metadata. `backend` picks the neurons, as in `convert`.
    """
    graph = read_graph(graph_or_path)
    chain = chain_of(graph)
    metadata = plain(graph.metadata)
    stages, layers, v_init = [], [], set()
    for name in chain[1:-1]:
        node = graph.nodes[name]
        if isinstance(node, nir.IF):
            check_if(name, node)
            v_init.add(float(plain(node.metadata).get("v_init", 0.0)))
            stages.append(nn.Sequential(*layers))
            layers = []
        else:
            layers.append(_torch_layer(name, node))
    stages.append(nn.Sequential(*layers))
    if len(v_init) > 1:
        raise NirError(f"the IF layers start from different membranes {sorted(v_init)}: not a dqn2snn graph")
    v0 = v_init.pop() if v_init else 0.0
    neuron_backend = make_backend(backend)
    observation_shape = tuple(int(d) for d in graph.nodes[chain[0]].input_type["input"])
    return SpikingQNetwork(
        stages, [neuron_backend.make_neuron(v0) for _ in stages[1:]], neuron_backend.make_neuron(v0), neuron_backend,
        _scales_of(metadata.get("scales"), len(stages) - 1), observation_shape, initial_membrane=v0,
        readout=metadata.get("our_readout", "spikes+membrane"), T=int(metadata.get("T", 64)),
    )


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


def _torch_layer(name: str, node: nir.NIRNode) -> nn.Module:
    """The torch layer of one Conv2d / Affine / Flatten node (in the dtype of its weights)."""
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if isinstance(node, nir.Conv2d):
        weight = torch.from_numpy(np.array(node.weight))
        if int(node.groups) != 1 or isinstance(node.padding, str):
            raise NirError(f"Conv2d node {name!r}: grouped or 'same'/'valid' padded convolutions are not supported")
        layer = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), tuple(np.ravel(node.stride)),
                          tuple(np.ravel(node.padding)), tuple(np.ravel(node.dilation)), dtype=weight.dtype)
    elif isinstance(node, nir.Affine):
        weight = torch.from_numpy(np.array(node.weight))
        layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    else:
        raise NirError(f"node {name!r} is a nir.{type(node).__name__}: from_nir rebuilds Conv2d, Affine, Flatten, IF")
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.from_numpy(np.array(node.bias)))
    return layer.eval()


def _scales_metadata(scales: LayerScales) -> dict:
    return {"hidden": {str(i): s.detach().cpu().tolist() for i, s in enumerate(scales.hidden)},
            "output": scales.output, "percentile": str(scales.percentile), "rank": scales.rank,
            "channel_wise": scales.channel_wise, "n_states": scales.n_states}


def _scales_of(stored: dict | None, n_hidden: int) -> LayerScales:
    """The scales recorded by `to_nir` (provenance and the spike-count readout's output scale); ones if absent."""
    if not stored:
        return LayerScales(tuple(torch.tensor(1.0) for _ in range(n_hidden)), 1.0, "unknown", "nonzero", False, 0)
    hidden = tuple(torch.tensor(stored["hidden"][str(i)], dtype=torch.float32) for i in range(n_hidden))
    percentile = stored["percentile"]
    try:
        percentile = float(percentile)
    except ValueError:
        pass  # "max" or "distilled T=..."
    return LayerScales(hidden, float(stored["output"]), percentile, stored["rank"], bool(stored["channel_wise"]),
                       int(stored["n_states"]))
