"""Any feed-forward ReLU Q-network (an `nn.Module`) as the plain `nn.Sequential` the conversion takes.

The module is traced with torch.fx, as SpikingJelly's `ann2snn.Converter` does, and its graph is read
node by node. Conv2d / Linear / ReLU / Flatten are kept; BatchNorm is folded into the layer before it and
AvgPool2d into the Conv2d or Linear beside it; Dropout and Identity are dropped; a constant scaling of
the input (`x / 255`, `x.float() / 255.0`) is folded into the first layer; a dueling head
(`V + A - A.mean(1, keepdim=True)`) is folded exactly into one plain head. Every other layer is refused
by name with the reason. The result is checked against the module's own outputs before it is returned,
so a graph read wrongly is refused, never converted. The weight arithmetic of the folds is `layer_folds`.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from dqn2snn_plugin.adapters import layer_folds as folds
from dqn2snn_plugin.errors import UnsupportedLayerError

_NOT_A_RATE = "only ReLU maps onto a spike rate (never negative, linear above zero); a {} does not"
REFUSED = {
    "MaxPool1d": "a maximum is not a weighted sum, which is all integrate-and-fire neurons compute exactly; "
                 "replace it by AvgPool2d or a strided Conv2d and retrain",
    "MaxPool2d": "a maximum is not a weighted sum, which is all integrate-and-fire neurons compute exactly; "
                 "replace it by AvgPool2d or a strided Conv2d and retrain",
    "AdaptiveMaxPool2d": "a maximum is not a weighted sum; replace it by AvgPool2d and retrain",
    "AdaptiveAvgPool2d": "its window depends on the input size; use an AvgPool2d with a fixed kernel",
    **{name: _NOT_A_RATE.format(name) for name in (
        "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid", "Softplus",
        "Hardtanh", "ReLU6", "Hardswish", "Hardsigmoid", "Softmax", "LogSoftmax")},
    **{name: "a recurrent layer carries state from one step to the next; only feed-forward networks convert"
       for name in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell")},
    **{name: "it normalises each observation by its own statistics, which is not a fixed weighted sum"
       for name in ("LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d")},
}
_NOISY = ("a noisy layer draws new weights on every call; copy its mean weights (weight_mu, bias_mu) into a "
          "plain Linear to convert it")
_DROPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_SAME_VALUE_METHODS = {"float", "to", "type", "contiguous", "detach", "clone"}
# operators and the tensor methods that name them
_ARITHMETIC = {**{op: op for op in (operator.truediv, operator.mul, operator.neg, operator.add, operator.sub)},
               "div": operator.truediv, "mul": operator.mul, "neg": operator.neg, "add": operator.add, "sub": operator.sub}


@dataclass(frozen=True)
class Traced:
    """The plain network and the input scaling found in the module's forward (None: it has none)."""

    network: nn.Sequential
    input_scale: float | None


def refuse_unsupported_modules(module: nn.Module, where: str) -> None:
    """Name the first layer the conversion cannot handle (before tracing, so the reason is the layer's)."""
    for name, sub in module.named_modules():
        kind = type(sub).__name__
        reason = _NOISY if "noisy" in kind.lower() else REFUSED.get(kind)
        if reason:
            raise UnsupportedLayerError(f"{where}: layer {name or kind} is a {kind}, which cannot be converted: {reason}")


def trace_q_network(module: nn.Module, observation_shape: tuple[int, ...], where: str) -> Traced:
    """Trace `module` (a copy in eval mode; the user's module is never changed) into a plain network.

    `observation_shape` is the input shape without the batch dimension; `where` names the source in
    errors. UnsupportedLayerError names the layer or operation that cannot be converted.
    """
    refuse_unsupported_modules(module, where)
    module = copy.deepcopy(module).float().eval()
    try:
        graph = fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - fx raises many types for code it cannot follow
        raise UnsupportedLayerError(
            f"{where}: its forward cannot be traced by torch.fx ({_first_line(exc)}); pass a module whose forward is a "
            "fixed sequence of layers"
        ) from None
    try:  # every node's output shape, for folding an average pooling into the Linear after it
        ShapeProp(graph).propagate(torch.zeros(1, *observation_shape))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward on this shape
        raise UnsupportedLayerError(f"{where}: its forward fails on an input of shape {tuple(observation_shape)}: "
                                    f"{type(exc).__name__}: {_first_line(exc)}") from None
    reader = _GraphReader(graph, where)
    network = reader.read()
    check_same_outputs(module, network, observation_shape, reader.input_scale, where)
    return Traced(network, reader.input_scale)


def infer_input_shape(module: nn.Module, where: str) -> tuple[int, ...]:
    """The input shape a module implies: `(D,)` if its first layer is a Linear, else `(C, S, S)` for the
    smallest square side S its forward accepts (84 for the Nature CNN). S is first worked out from the
    layers in the order they were defined (one forward pass checks it), else found by trying each side."""
    first = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if first is None:
        raise UnsupportedLayerError(f"{where}: the module has no Conv2d or Linear layer")
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    guess = _side_from_layers(module)
    sides = range(first.kernel_size[0], 513)
    for side in ([guess] if guess else []) + list(sides):
        if _accepts(module, (first.in_channels, side, side)):
            return (first.in_channels, side, side)
    raise UnsupportedLayerError(f"{where}: no square input up to 512x512 fits the module; pass observation_shape")


def _side_from_layers(module: nn.Module) -> int | None:
    """The smallest square side whose conv and pooling outputs give the first Linear's inputs, reading
    the layers in definition order (right for a plain stack; `_accepts` checks it)."""
    stack, linear = [], None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            linear = m
            break
        if isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)):
            stack.append(m)
    convs = [m for m in stack if isinstance(m, nn.Conv2d)]
    if linear is None or not convs:
        return None
    for side in range(convs[0].kernel_size[0], 513):
        s = side
        for m in stack:
            kernel, stride, padding = (folds.pair(v)[0] for v in (m.kernel_size, m.stride or m.kernel_size, m.padding))
            s = (s + 2 * padding - kernel) // stride + 1
        if s > 0 and convs[-1].out_channels * s * s == linear.in_features:
            return side
    return None


def _accepts(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether the module's forward runs on one input of `shape` (in eval mode, restored after)."""
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, *shape))
        return True
    except (RuntimeError, ValueError):
        return False
    finally:
        module.train(training)


@torch.no_grad()
def check_same_outputs(module: nn.Module, network: nn.Sequential, shape: tuple[int, ...],
                       input_scale: float | None, where: str) -> None:
    """Refuse unless `network` gives the module's outputs on random inputs (raw values: 0..255 when the
    forward scales its input, else standard normal)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, *shape, generator=generator)
    if input_scale is not None:
        x = torch.rand(8, *shape, generator=generator) * round(1 / input_scale)
    try:
        theirs, ours = module(x), network(x)
    except RuntimeError as exc:
        raise UnsupportedLayerError(f"{where}: the traced layers do not run on input {tuple(shape)}: "
                                    f"{_first_line(exc)}") from None
    if not isinstance(theirs, torch.Tensor) or theirs.shape != ours.shape:
        raise UnsupportedLayerError(f"{where}: the module's forward does not return one [batch, actions] tensor")
    tolerance = 1e-4 * max(1.0, float(theirs.abs().max()))
    error = float((theirs - ours).abs().max())
    if error > tolerance:
        raise UnsupportedLayerError(
            f"{where}: the traced layers do not reproduce the module's outputs (max difference {error:.3g}); "
            "its forward does something this loader does not read"
        )


@dataclass(frozen=True)
class _Term:
    """One stream of a value: `mix @ (scale * layers(x))`; `mix` None is the identity."""

    layers: tuple[nn.Module, ...]
    scale: float = 1.0
    mix: torch.Tensor | None = None


@dataclass(frozen=True)
class _Value:
    """A tensor in the graph: a sum of streams that share the input (one stream but for dueling heads)."""

    terms: tuple[_Term, ...]
    pool_shapes: dict[int, tuple[int, ...]] = field(default_factory=dict, compare=False)


class _Batch:
    """The batch size (`x.size(0)`, `x.shape[0]`), as used in `x.view(x.size(0), -1)`."""


class _Shape:
    """`x.shape` / `x.size()`; only its first entry (the batch size) is used."""


class _GraphReader:
    """Reads a traced graph into layers; `input_scale` is the constant the forward multiplied its input by."""

    def __init__(self, graph: fx.GraphModule, where: str):
        self.graph, self.where = graph, where
        self.input_scale: float | None = None

    def read(self) -> nn.Sequential:
        env: dict[fx.Node, Any] = {}
        for node in self.graph.graph.nodes:
            if node.op == "output":
                result = env[node.args[0]] if isinstance(node.args[0], fx.Node) else None
                if not isinstance(result, _Value):
                    raise UnsupportedLayerError(f"{self.where}: the forward does not return one tensor of Q-values")
                return self._finish(result)
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            env[node] = self._step(node, args, kwargs)
        raise UnsupportedLayerError(f"{self.where}: the traced graph has no output")

    # ------------------------------------------------------------------ one node
    def _step(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node.op == "placeholder":
            if node.target != next(iter(self.graph.graph.nodes)).target:
                raise UnsupportedLayerError(f"{self.where}: the forward takes more than one input ({node.target})")
            return _Value((_Term(()),))
        if node.op == "get_attr":
            raise UnsupportedLayerError(
                f"{self.where}: the forward uses the tensor {node.target} directly (a functional layer such as "
                "F.linear); only layer modules can be converted"
            )
        if node.op == "call_module":
            return self._module(self.graph.get_submodule(node.target), node.target, args[0], node)
        return self._function(node, args, kwargs)

    def _module(self, module: nn.Module, name: str, x: _Value, node: fx.Node) -> _Value:
        kind = type(module).__name__
        if isinstance(module, _DROPPED):
            return x
        if isinstance(module, nn.ReLU):
            return self._apply(x, nn.ReLU(), name)
        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise UnsupportedLayerError(f"{self.where}: layer {name} flattens dims {module.start_dim}..{module.end_dim}, "
                                            "not everything after the batch")
            return self._apply(x, nn.Flatten(), name)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise UnsupportedLayerError(f"{self.where}: layer {name} pads with {module.padding_mode}, not zeros")
            return self._apply(x, module, name)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self._batch_norm(x, module, name)
        if isinstance(module, nn.AvgPool2d):
            shape = tuple(node.args[0].meta["tensor_meta"].shape) if "tensor_meta" in node.args[0].meta else None
            return self._avg_pool(x, module, name, shape)
        reason = _NOISY if "noisy" in kind.lower() else REFUSED.get(kind)
        raise UnsupportedLayerError(
            f"{self.where}: layer {name} is a {kind}, which cannot be converted: "
            + (reason or "only Conv2d, Linear, ReLU, Flatten, AvgPool2d, BatchNorm, Dropout and Identity can")
        )

    def _function(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        target, name = node.target, node.name
        if target in (F.relu, torch.relu) or (node.op == "call_method" and target == "relu"):
            return self._apply(args[0], nn.ReLU(), name)
        if target in (F.dropout, torch.dropout) or (node.op == "call_method" and target in _SAME_VALUE_METHODS):
            return args[0]
        if target is torch.flatten or (node.op == "call_method" and target == "flatten"):
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            if (start, end) != (1, -1):
                raise UnsupportedLayerError(f"{self.where}: {name} flattens dims {start}..{end}, not all after the batch")
            return self._apply(args[0], nn.Flatten(), name)
        if node.op == "call_method" and target in ("view", "reshape") or target is torch.reshape:
            return self._view(args, name)
        if node.op == "call_method" and target == "size":
            return _Batch() if args[1:] == (0,) else _Shape()
        if target is getattr and args[1] == "shape":
            return _Shape()
        if target is operator.getitem and isinstance(args[0], _Shape):
            return _Batch() if args[1] == 0 else self._unsupported(name, "uses a non-batch dimension of a shape")
        if node.op == "call_method" and target == "mean" or target is torch.mean:
            return self._mean(args, kwargs, name)
        if target in _ARITHMETIC:  # `x / 255`, `x.div(255)`, `v + a - a.mean(...)`
            return self._arithmetic(_ARITHMETIC[target], args, name)
        return self._unsupported(name, f"calls {getattr(target, '__name__', target)}")

    def _unsupported(self, name: str, what: str) -> NoReturn:
        raise UnsupportedLayerError(f"{self.where}: its forward {what} (node {name}), which cannot be converted")

    # ------------------------------------------------------------------ layers
    def _single(self, x: Any, name: str) -> _Term:
        if not isinstance(x, _Value):
            self._unsupported(name, "applies a layer to something other than the input's tensor")
        if len(x.terms) != 1 or x.terms[0].mix is not None:
            self._unsupported(name, "applies a layer after adding streams (only a final dueling sum can be folded)")
        return x.terms[0]

    def _apply(self, x: Any, layer: nn.Module, name: str) -> _Value:
        term = self._single(x, name)
        layers, scale = term.layers, term.scale
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layers, layer = self._absorb_pool(x, layers, layer)
            if scale != 1.0:
                if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in layers):
                    self.input_scale = scale
                layer = folds.scaled(layer, scale, bias=False)
                scale = 1.0
        elif isinstance(layer, nn.ReLU) and scale < 0:
            self._unsupported(name, "applies ReLU to a negated value")
        return _Value((replace(term, layers=(*layers, layer), scale=scale),), x.pool_shapes)

    def _batch_norm(self, x: _Value, norm: nn.modules.batchnorm._BatchNorm, name: str) -> _Value:
        term = self._single(x, name)
        last = term.layers[-1] if term.layers else None
        if not isinstance(last, (nn.Conv2d, nn.Linear)) or term.scale != 1.0 or norm.running_mean is None:
            raise UnsupportedLayerError(
                f"{self.where}: layer {name} is a {type(norm).__name__} that does not follow a Conv2d or Linear "
                "directly (or keeps no running statistics), so it cannot be folded into one"
            )
        return _Value((replace(term, layers=(*term.layers[:-1], folds.with_batch_norm(last, norm))),), x.pool_shapes)

    def _avg_pool(self, x: _Value, pool: nn.AvgPool2d, name: str, shape: tuple[int, ...] | None) -> _Value:
        term = self._single(x, name)
        kernel, stride, padding = (folds.pair(v) for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding))
        if padding != (0, 0) or pool.ceil_mode or pool.divisor_override:
            raise UnsupportedLayerError(f"{self.where}: layer {name} (AvgPool2d) pads, rounds up or overrides its "
                                        "divisor; only unpadded average pooling folds exactly")
        last = term.layers[-1] if term.layers else None
        if folds.plain_conv(last) and term.scale == 1.0:  # conv then pool: one conv with a wider kernel
            return _Value((replace(term, layers=(*term.layers[:-1], folds.conv_then_pool(last, kernel, stride))),),
                          x.pool_shapes)
        pool = nn.AvgPool2d(kernel, stride)
        return _Value((replace(term, layers=(*term.layers, pool)),), {**x.pool_shapes, id(pool): shape})

    def _absorb_pool(self, x: _Value, layers: tuple, layer: nn.Module) -> tuple[tuple, nn.Module]:
        """Fold a pending AvgPool2d into the Conv2d or Linear that follows it."""
        if layers and isinstance(layers[-1], nn.AvgPool2d) and folds.plain_conv(layer) and layer.padding == (0, 0):
            return layers[:-1], folds.pool_then_conv(layers[-1], layer)
        if len(layers) > 1 and isinstance(layers[-2], nn.AvgPool2d) and isinstance(layers[-1], nn.Flatten) and isinstance(layer, nn.Linear):
            shape = x.pool_shapes.get(id(layers[-2]))
            if shape is not None:
                return layers[:-2] + (layers[-1],), folds.pool_then_linear(layers[-2], layer, tuple(shape[1:]))
        return layers, layer

    def _view(self, args: tuple, name: str) -> _Value:
        x, *sizes = args
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = list(sizes[0])
        flat = len(sizes) == 2 and (isinstance(sizes[0], _Batch) or sizes[0] == -1) and isinstance(sizes[1], int)
        if not flat:
            self._unsupported(name, "reshapes to something other than [batch, -1]")
        return self._apply(x, nn.Flatten(), name)

    # ------------------------------------------------------------------ streams
    def _mean(self, args: tuple, kwargs: dict, name: str) -> _Value:
        x = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        if dim not in (1, -1, (1,), (-1,), [1], [-1]) or not keepdim or not isinstance(x, _Value):
            self._unsupported(name, "takes a mean other than over the actions with keepdim=True")
        mixes = [self._mix(t, name) for t in x.terms]
        return _Value(tuple(replace(t, scale=1.0, mix=m.mean(dim=0, keepdim=True)) for t, m in zip(x.terms, mixes)),
                      x.pool_shapes)

    def _arithmetic(self, op: Any, args: tuple, name: str) -> _Value:
        if op is operator.neg:
            return self._times(args[0], -1.0, name)
        a, b = (args + (None,))[:2]
        if op in (operator.mul, operator.truediv) and isinstance(a, _Value) and isinstance(b, (int, float)):
            return self._times(a, b if op is operator.mul else 1.0 / b, name)
        if op is operator.mul and isinstance(b, _Value) and isinstance(a, (int, float)):
            return self._times(b, a, name)
        if op in (operator.add, operator.sub) and isinstance(a, _Value) and isinstance(b, _Value):
            sign = 1.0 if op is operator.add else -1.0
            terms = [*self._mixed(a, name), *(replace(t, mix=sign * t.mix) for t in self._mixed(b, name))]
            rows = max(t.mix.shape[0] for t in terms)
            terms = [replace(t, mix=t.mix.expand(rows, -1).clone()) if t.mix.shape[0] == 1 else t for t in terms]
            if any(t.mix.shape[0] != rows for t in terms):
                self._unsupported(name, "adds tensors of different widths")
            return _Value(tuple(terms), {**a.pool_shapes, **b.pool_shapes})
        return self._unsupported(name, f"computes {getattr(op, '__name__', op)} of {type(a).__name__} and "
                                       f"{type(b).__name__} (only constant scalings and a dueling sum fold)")

    def _times(self, x: Any, factor: float, name: str) -> _Value:
        if not isinstance(x, _Value):
            self._unsupported(name, "scales something other than a tensor")
        return _Value(tuple(replace(t, scale=t.scale * float(factor)) if t.mix is None
                            else replace(t, mix=t.mix * float(factor)) for t in x.terms), x.pool_shapes)

    def _width(self, term: _Term, name: str) -> int:
        last = term.layers[-1] if term.layers else None
        if not isinstance(last, nn.Linear):
            self._unsupported(name, "combines tensors that do not come straight from a Linear layer")
        return last.out_features

    def _mix(self, term: _Term, name: str) -> torch.Tensor:
        """The term's output map with its scale inside it (the identity when it has none)."""
        mix = torch.eye(self._width(term, name)) if term.mix is None else term.mix
        return term.scale * mix

    def _mixed(self, x: _Value, name: str) -> list[_Term]:
        return [replace(t, scale=1.0, mix=self._mix(t, name)) for t in x.terms]

    # ------------------------------------------------------------------ the end
    def _finish(self, value: _Value) -> nn.Sequential:
        if len(value.terms) == 1 and value.terms[0].mix is None:
            term = value.terms[0]
            layers = list(term.layers)
            if term.scale != 1.0 and layers and isinstance(layers[-1], (nn.Conv2d, nn.Linear)):
                layers[-1] = folds.scaled(layers[-1], term.scale, bias=True)
            elif term.scale != 1.0:
                raise UnsupportedLayerError(f"{self.where}: the forward scales its output after a "
                                            f"{type(layers[-1]).__name__ if layers else 'nothing'}, not a Linear layer")
            return self._plain(layers)
        return self._plain(self._fold_streams(value))

    def _plain(self, layers: list[nn.Module]) -> nn.Sequential:
        for layer in layers:
            if isinstance(layer, nn.AvgPool2d):
                raise UnsupportedLayerError(
                    f"{self.where}: an AvgPool2d is neither after a Conv2d nor before a Conv2d / Flatten+Linear "
                    "without padding, so it cannot be folded into a layer"
                )
        if not layers or not isinstance(layers[-1], (nn.Conv2d, nn.Linear)):
            raise UnsupportedLayerError(f"{self.where}: the network must end with a Linear layer giving Q-values")
        return nn.Sequential(*layers)

    def _fold_streams(self, value: _Value) -> list[nn.Module]:
        """Fold `sum_k mix_k @ stream_k(trunk(x))` (a dueling head) into plain layers, exactly."""
        merged: dict[tuple[int, ...], _Term] = {}
        for term in value.terms:
            key = tuple(map(id, term.layers))
            merged[key] = replace(term, mix=term.mix + merged[key].mix) if key in merged else term
        terms = list(merged.values())
        trunk = 0
        while all(len(t.layers) > trunk and t.layers[trunk] is terms[0].layers[trunk] for t in terms):
            trunk += 1
        streams = [t.layers[trunk:] for t in terms]
        for stream in streams:
            kinds = [type(m) for m in stream]
            if not stream or kinds != [nn.Linear if i % 2 == 0 else nn.ReLU for i in range(len(stream))] \
                    or len(stream) % 2 == 0:
                raise UnsupportedLayerError(
                    f"{self.where}: the streams added at the end are not Linear/ReLU stacks on a shared trunk "
                    f"({', '.join(k.__name__ for k in kinds) or 'nothing'}), so they cannot be folded into one head"
                )
        if len({len(s) for s in streams}) != 1:
            raise UnsupportedLayerError(f"{self.where}: the value and advantage streams have different depths "
                                        f"({', '.join(str(len(s) // 2 + 1) for s in streams)} Linear layers)")
        return [*terms[0].layers[:trunk], *folds.merged_streams(streams, [t.mix for t in terms])]


def _first_line(exc: Exception) -> str:
    """An exception's message cut to one line (errors here are one line), or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
