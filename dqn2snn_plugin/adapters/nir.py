"""Run a converted policy's `.nir` file (from `dqn2snn_plugin.to_nir`) in SpikingJelly, snnTorch or Sinabs.

Each framework's own NIR importer builds the network; as installed, none of them runs our IF neurons
(threshold 1, reset by subtraction, at most one spike per step, spike when v >= 1) exactly, so
`load_nir` applies these corrections (tests/test_nir.py: test_each_framework_spikes_exactly_as_ours, and
test_spikingjelly_as_imported_resets_to_zero_and_differs for the import without them):
- SpikingJelly 2.0 `import_from_nir`: needs `dt=1.0` (its default 1e-4 rejects r = 1) and imports IF
  as reset to zero: every imported `IFNode` gets `v_reset = None` (soft reset). Imported in multi-step
  mode (`step_mode="m"`): one call takes all T steps, [T, B, ...].
- snnTorch 1.0 `import_from_nir`: builds `Leaky(beta=0.9, reset_delay=False)` (a leak) and a Flatten
  that also flattens the batch: every IF becomes `Leaky(beta=1, reset_mechanism="subtract",
  reset_delay=True, init_hidden=True)` firing on mem >= 1 (snnTorch's own spike function fires on
  mem > 1), every Flatten starts at dimension 1.
- Sinabs 3.1.3 `from_nir`: its IAF neurons may fire several spikes per step and clip the membrane at
  -threshold: every IAF gets `spike_fn=SingleSpike` and `min_v_mem=None`.
In every framework the membranes start at the graph's `v_init` (IF metadata; no importer reads it),
and with `dtype=torch.float64` the weights are copied again from the graph at full precision (the
snnTorch and Sinabs importers cast them to float32).

    from dqn2snn_plugin.adapters.nir import load_nir, run_nir
    net = load_nir("out/snn.nir", framework="snntorch")     # the framework's own torch module
    q_sum, _ = run_nir(net, observations, T=64)              # output summed over T: [B, n_actions]
    actions = q_sum.argmax(1)

Sinabs is an optional install (`pip install --no-deps sinabs pbr`: its release pins nir <= 1.0.4, which
cannot read files written by nir 1.0.8; on nir 1.0.8 it runs unchanged).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.coding import check_T
from dqn2snn_plugin.errors import ConfigError, NirError
from dqn2snn_plugin.io.checks import FLOAT_DTYPES, check_allocation
from dqn2snn_plugin.io.nir_graph import checked_graph
from dqn2snn_plugin.observations import observation_batch

FRAMEWORKS: tuple[str, ...] = ("spikingjelly", "snntorch", "sinabs")


@dataclass
class NirImport:
    """What `run_nir` needs besides the module: framework, default T, initial membrane, the IF layers."""

    framework: str
    T: int
    v_init: float
    neurons: dict[str, tuple[int, ...]]  # IF node name -> its shape (no batch)
    observation_shape: tuple[int, ...]
    dtype: torch.dtype


def load_nir(path: str | Path | nir.NIRGraph, framework: str = "spikingjelly", *,
             dtype: torch.dtype = torch.float32) -> nn.Module:
    """`framework`'s runnable module for a graph written by `to_nir`, corrected to run it exactly.

    The module is the framework's own (a `torch.fx.GraphModule` from its importer); `module.nir_import`
    (a `NirImport`) tells `run_nir` how to step it. `dtype=torch.float64` where ties must not depend
    on float32 rounding.
    """
    if framework not in FRAMEWORKS:
        raise ConfigError(f"framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    if dtype not in FLOAT_DTYPES:
        raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    parts = checked_graph(path)  # the checks from_nir applies, before any importer sees the graph
    importer = {"spikingjelly": _spikingjelly, "snntorch": _snntorch, "sinabs": _sinabs}[framework]
    module = importer(parts.graph, parts.neurons, parts.T, dtype)
    _copy_weights(module, parts.graph, dtype)
    module.nir_import = NirImport(framework, parts.T, parts.v_init, parts.neurons, parts.observation_shape, dtype)
    return module.eval()


@torch.no_grad()
def run_nir(module: nn.Module, obs, T: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Simulate T steps (default: the graph's T) from fresh membranes at `v_init`, the observation
    injected at every step. Returns the output summed over T [B, n_actions] (argmax: the action) and
    each IF layer's spike counts per neuron {node name: [B, ...]}."""
    info = getattr(module, "nir_import", None)
    if not isinstance(info, NirImport):
        raise ConfigError(f"run_nir runs a module made by load_nir, not a {type(module).__name__}")
    T = check_T(info.T if T is None else T)
    x = observation_batch(obs, info.observation_shape).to(info.dtype)
    at_once = 1 if info.framework == "snntorch" else T  # snnTorch is stepped; the others take all T steps in one call
    values = x[0].numel() + 2 * sum(math.prod(shape) for shape in info.neurons.values())  # input, currents, spikes
    check_allocation(at_once * len(x) * values * x.element_size(),
                     f"run_nir of {len(x)} observations at T = {T} ({info.framework}: {at_once} steps at once)", ConfigError)
    counts: dict[str, torch.Tensor] = {}
    hooks = [_submodule(module, name).register_forward_hook(_counter(name, counts)) for name in info.neurons]
    try:
        if info.framework == "sinabs":
            total = _run_sinabs(module, info, x, T)
        elif info.framework == "spikingjelly":  # multi-step: all T steps in one call, [T, B, ...]
            out, _ = module(x.expand(T, *x.shape), _spikingjelly_state(module, info, x.shape[0]))
            total = out.sum(0)
        else:
            _snntorch_state(module, info, x.shape[0])
            total = sum(module(x)[0] for _ in range(T))
    finally:
        for hook in hooks:
            hook.remove()
    if info.framework == "sinabs":  # one call saw all B*T samples
        counts = {name: c.unflatten(0, (x.shape[0], T)).sum(1) for name, c in counts.items()}
    elif info.framework == "spikingjelly":  # one call saw [T, B, ...]
        counts = {name: c.sum(0) for name, c in counts.items()}
    return total, counts


def _counter(name: str, counts: dict[str, torch.Tensor]):
    def hook(_module, _inputs, output):
        spikes = output[0] if isinstance(output, tuple) else output
        counts[name] = counts[name] + spikes if name in counts else spikes.clone()
    return hook


def _submodule(module: nn.Module, name: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError:
        raise NirError(f"the imported module has no layer {name!r}: the importer renamed the graph's nodes") from None


def _copy_weights(module: nn.Module, graph: nir.NIRGraph, dtype: torch.dtype) -> None:
    """The module in `dtype`, with every Conv2d / Affine weight taken from the graph at full precision."""
    module.to(dtype)
    with torch.no_grad():
        for name, node in graph.nodes.items():
            if isinstance(node, (nir.Conv2d, nir.Affine)):
                layer = _submodule(module, name)
                layer.weight.copy_(torch.from_numpy(np.array(node.weight)))
                layer.bias.copy_(torch.from_numpy(np.array(node.bias)))


def _spikingjelly(graph: nir.NIRGraph, neurons: dict, T: int, dtype: torch.dtype) -> nn.Module:
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    module = import_from_nir(graph, dt=1.0, dtype=dtype, step_mode="m")  # dt = 1: one NIR time unit is one step
    for name in neurons:
        node = next(m for m in _submodule(module, name).modules() if isinstance(m, neuron.IFNode))
        node.v_reset = None  # reset by subtraction
    return module


def _spikingjelly_state(module: nn.Module, info: NirImport, batch: int) -> dict:
    """Explicit initial state {IF node name: (v,)}, every membrane at v_init."""
    return {name: (torch.full((batch, *shape), info.v_init, dtype=info.dtype),) for name, shape in info.neurons.items()}


def fires_at_threshold(mem_shift: torch.Tensor) -> torch.Tensor:
    """snnTorch spike function firing on mem >= threshold (ours, SpikingJelly's, Sinabs'); inference only."""
    return (mem_shift >= 0).to(mem_shift.dtype)


def _snntorch(graph: nir.NIRGraph, neurons: dict, T: int, dtype: torch.dtype) -> nn.Module:
    import snntorch
    from snntorch._neurons.neurons import SpikingNeuron
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line about recurrent subgraphs
        module = import_from_nir(graph)
    for name, node in graph.nodes.items():
        if isinstance(node, nir.IF):
            leaky = snntorch.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract", reset_delay=True,
                                   init_hidden=True, spike_grad=fires_at_threshold)
            if leaky in SpikingNeuron.instances:  # keep it out of snnTorch's class-global reset list
                SpikingNeuron.instances.remove(leaky)
            setattr(module, name, leaky)
        elif isinstance(node, nir.Flatten):
            start, end = int(node.start_dim), int(node.end_dim)
            setattr(module, name, nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end))
    return module


def _snntorch_state(module: nn.Module, info: NirImport, batch: int) -> None:
    """Every Leaky's membrane at v_init (below threshold, so no reset is pending at the first step)."""
    for name, shape in info.neurons.items():
        _submodule(module, name).mem = torch.full((batch, *shape), info.v_init, dtype=info.dtype)


def _sinabs(graph: nir.NIRGraph, neurons: dict, T: int, dtype: torch.dtype) -> nn.Module:
    try:
        from sinabs.activation import SingleSpike
        from sinabs.nir import from_nir
    except ImportError as exc:
        raise ConfigError(f"Sinabs is not installed ({exc}): pip install --no-deps sinabs pbr") from None
    class SingleSpikeInDtype(SingleSpike):
        """Sinabs' SingleSpike with spikes in the membrane's dtype (its own are float32)."""

        @staticmethod
        def forward(ctx, v_mem, spike_threshold, surrogate_grad_fn):
            return SingleSpike.forward(ctx, v_mem, spike_threshold, surrogate_grad_fn).to(v_mem.dtype)

    with warnings.catch_warnings():  # it calls nirtorch.load, deprecated in nirtorch 2 but working
        warnings.simplefilter("ignore", DeprecationWarning)
        module = from_nir(graph, num_timesteps=T)
    for name in neurons:
        layer = _submodule(module, name)
        layer.spike_fn = SingleSpikeInDtype  # one spike per step
        layer.min_v_mem = None  # no clipping of the membrane
    return module


def _run_sinabs(module: nn.Module, info: NirImport, x: torch.Tensor, T: int) -> torch.Tensor:
    """Sinabs takes all steps at once: [B*T, ...] (sample-major), membranes set to v_init first."""
    batch = x.shape[0]
    for name, shape in info.neurons.items():
        layer = _submodule(module, name)
        layer.num_timesteps = T
        layer.init_state_with_shape((batch, *shape))
        layer.v_mem = torch.full((batch, *shape), info.v_init, dtype=info.dtype)
    out = module(x.unsqueeze(1).expand(batch, T, *x.shape[1:]).flatten(0, 1))
    out = out[0] if isinstance(out, tuple) else out
    return out.unflatten(0, (batch, T)).sum(1)
