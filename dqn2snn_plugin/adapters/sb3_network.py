"""Turn an SB3 `QNetwork` / sb3-contrib `QuantileNetwork` state dict into a plain `nn.Sequential`.

The weights alone say nothing about activations or strides. SB3's own extractors (`NatureCNN`,
`FlattenExtractor`) and ReLU MLP heads are rebuilt exactly. A custom features extractor that is a plain
CNN (Conv2d layers, then Linear layers) is rebuilt when the observation space is recorded: its strides
and paddings are the only ones that turn that space into the first Linear's inputs (refused when two
fit), and a ReLU is taken after each of its layers (SB3 records no activations of a custom class: the
`assumptions` the builder returns say so). QR-DQN's mean over quantiles is folded into the last layer.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

import torch
from torch import nn

from dqn2snn_plugin.errors import CheckpointError, UnsupportedLayerError

# (kernel size, stride) of the three Conv2d layers of SB3's NatureCNN, at indices 0, 2, 4 of `cnn`.
NATURE_CNN = {0: (8, 4), 2: (4, 2), 4: (3, 1)}
NATURE_CNN_KEYS = {f"cnn.{i}.{p}" for i in NATURE_CNN for p in ("weight", "bias")} | {
    "linear.0.weight",
    "linear.0.bias",
}
SUPPORTED_EXTRACTORS = ("NatureCNN", "FlattenExtractor")


def build_q_network(
    state: Mapping[str, torch.Tensor],
    *,
    head: str,
    n_quantiles: int | None,
    observation_shape: tuple[int, ...] | None,
    extractor_class: str | None,
    where: str,
) -> tuple[nn.Sequential, tuple[str, ...]]:
    """Build the Q-network from a state dict keyed like a `QNetwork` (`features_extractor.*`, `<head>.*`);
    return it with the assumptions made (for a custom extractor, else none).

    `head` is `"q_net"` (DQN) or `"quantile_net"` (QR-DQN, whose `n_quantiles` outputs per action are
    averaged into one Q-value). `observation_shape` (None: not recorded) is needed for a custom CNN
    extractor; `extractor_class` is the recorded features extractor class name (None: not recorded). The network takes observations as SB3's extractor receives them: any `/255` is the
    caller's to fold. `where` names the source in error messages.
    """
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}: weight {key} holds NaN or inf values")
    features = {k[len("features_extractor.") :]: v for k, v in state.items() if k.startswith("features_extractor.")}
    head_state = {k[len(head) + 1 :]: v for k, v in state.items() if k.startswith(head + ".")}
    strays = sorted(set(state) - {f"features_extractor.{k}" for k in features} - {f"{head}.{k}" for k in head_state})
    if strays:
        raise UnsupportedLayerError(f"{where}: unexpected weight {strays[0]} (not part of an SB3 DQN Q-network)")
    assumptions: tuple[str, ...] = ()
    head_layers = _relu_mlp(head_state, head, where)
    if not features:
        layers = [nn.Flatten()]
    elif set(features) == NATURE_CNN_KEYS and extractor_class in (None, "NatureCNN"):
        layers = _nature_cnn(features, where)
    else:
        named = f"features_extractor ({extractor_class})" if extractor_class else "features_extractor"
        layers, assumptions = _custom_cnn(features, head_layers[0].in_features, observation_shape, f"{where}: {named}")
    layers += head_layers
    if n_quantiles:
        _fold_quantile_mean(layers[-1], n_quantiles, where)
    return nn.Sequential(*layers), assumptions


def infer_observation_shape(net: nn.Sequential, where: str) -> tuple[int, ...]:
    """The input shape the network implies: `(D,)` for an MLP, `(C, S, S)` for a NatureCNN.

    For a CNN the smallest square size S whose conv outputs give the first Linear's `in_features`
    is chosen (84 for Atari's NatureCNN).
    """
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    first_linear = next(m for m in net if isinstance(m, nn.Linear))
    if not convs:
        return (first_linear.in_features,)
    for size in range(convs[0].kernel_size[0], 1025):
        side = size
        for conv in convs:
            side = (side - conv.kernel_size[0]) // conv.stride[0] + 1
        if side > 0 and convs[-1].out_channels * side * side == first_linear.in_features:
            return (convs[0].in_channels, size, size)
    raise CheckpointError(
        f"{where}: no square input size gives the {first_linear.in_features} features the first Linear "
        "layer expects; the conv and linear weights do not match"
    )


def _nature_cnn(features: dict[str, torch.Tensor], where: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for index, (kernel, stride) in NATURE_CNN.items():
        key = f"features_extractor.cnn.{index}"
        weight, bias = features[f"cnn.{index}.weight"], features[f"cnn.{index}.bias"]
        if weight.ndim != 4 or tuple(weight.shape[2:]) != (kernel, kernel):
            raise CheckpointError(
                f"{where}: {key}.weight has shape {tuple(weight.shape)}; NatureCNN expects a {kernel}x{kernel} kernel"
            )
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], kernel, stride=stride)
        layers += [_load(conv, weight, bias, key, where), nn.ReLU()]
    linear = _linear(features["linear.0.weight"], features["linear.0.bias"], "features_extractor.linear.0", where)
    return [*layers, nn.Flatten(), linear, nn.ReLU()]


def _custom_cnn(features: dict[str, torch.Tensor], head_inputs: int, shape: tuple[int, ...] | None,
                what: str) -> tuple[list[nn.Module], tuple[str, ...]]:
    """A custom plain-CNN features extractor: Conv2d layers, then Linear layers, in state-dict order.
    `what` opens every error line: the source and the extractor's recorded class."""
    where = what.rsplit(": ", 1)[0]
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in features.items():
        module, _, kind = key.rpartition(".")
        if kind not in ("weight", "bias") or not module:
            raise UnsupportedLayerError(f"{what}: its key {key} is not a layer's weight or bias")
        groups.setdefault(module, {})[kind] = tensor
    ndims = [g["weight"].ndim if "weight" in g else 0 for g in groups.values()]
    n_convs = sum(d == 4 for d in ndims)
    if not n_convs or ndims != [4] * n_convs + [2] * (len(ndims) - n_convs):
        name = next((f"{m} ({d}-D weight)" for m, d in zip(groups, ndims) if d not in (2, 4)), next(iter(groups)))
        raise UnsupportedLayerError(
            f"{what} is a custom extractor that is not a plain CNN (Conv2d layers, then Linear layers; "
            f"at features_extractor.{name}): pass the architecture with network=..."
        )
    if shape is None or len(shape) != 3:
        raise UnsupportedLayerError(
            f"{what} is a custom extractor whose strides follow from the observation space, which is not "
            "recorded here (a bare state dict): load the SB3 zip, or pass the architecture with network=..."
        )
    convs = list(groups.items())[:n_convs]
    channels = convs[0][1]["weight"].shape[1]
    if shape[0] != channels:
        raise UnsupportedLayerError(
            f"{what}: its first conv takes {channels} channels but the recorded observation space is "
            f"{'x'.join(map(str, shape))}; an extractor that transposes its input cannot be rebuilt as a plain "
            "network: give it channel-first observations"
        )
    linears = list(groups.items())[n_convs:]
    target = linears[0][1]["weight"].shape[1] if linears else head_inputs
    fits = _conv_geometries([g["weight"] for _, g in convs], shape[1:], target)
    if len(fits) != 1:
        found = "no strides and paddings" if not fits else f"{len(fits)} architectures (e.g. " + " and ".join(
            _geometry_text(f) for f in fits[:2]) + ")"
        raise UnsupportedLayerError(
            f"{what}: {found} turn the {'x'.join(map(str, shape))} observations into the {target} features its "
            "first Linear layer takes: pass the architecture with network=..."
        )
    layers: list[nn.Module] = []
    for (name, group), (stride, padding) in zip(convs, fits[0]):
        weight = group["weight"]
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=stride, padding=padding,
                         bias="bias" in group)
        layers += [_load(conv, weight, group.get("bias"), f"features_extractor.{name}", where), nn.ReLU()]
    layers.append(nn.Flatten())
    for name, group in linears:
        if "bias" not in group:
            raise CheckpointError(f"{where}: features_extractor.{name} lacks its bias")
        layers += [_linear(group["weight"], group["bias"], f"features_extractor.{name}", where), nn.ReLU()]
    assumed = (f"the custom features extractor is {n_convs} Conv2d ({_geometry_text(fits[0])}, the only strides "
               f"and paddings that fit the observation space) and {len(linears)} Linear layers, a ReLU after each "
               "(SB3 records no activations of a custom class)")
    return layers, (assumed,)


def _conv_geometries(weights: list[torch.Tensor], size: tuple[int, ...], target: int) -> list[tuple]:
    """Every (stride, padding) per conv (stride 1..k, padding 0..k//2) taking `size` to `target` features."""
    options = [[(s, p) for s in range(1, w.shape[2] + 1) for p in range(w.shape[2] // 2 + 1)] for w in weights]
    fits = []
    for choice in itertools.product(*options):
        h, w = size
        for weight, (stride, padding) in zip(weights, choice):
            h = (h + 2 * padding - weight.shape[2]) // stride + 1
            w = (w + 2 * padding - weight.shape[3]) // stride + 1
        if h > 0 and w > 0 and weights[-1].shape[0] * h * w == target:
            fits.append(choice)
    return fits


def _geometry_text(choice: tuple) -> str:
    return "strides " + ", ".join(str(s) for s, _ in choice) + " and paddings " + ", ".join(str(p) for _, p in choice)


def _relu_mlp(head_state: dict[str, torch.Tensor], head: str, where: str) -> list[nn.Module]:
    """The head built by SB3's `create_mlp`: Linear layers at indices 0, 2, 4, ... with ReLU between."""
    indices = []
    for key in sorted(head_state):
        match = re.fullmatch(r"(\d+)\.(weight|bias)", key)
        if not match:
            raise UnsupportedLayerError(
                f"{where}: {head}.{key} is not a layer of a plain Linear/ReLU head "
                "(dueling or other custom heads are not supported)"
            )
        if head_state[key].ndim == 1 and match[2] == "weight":
            raise UnsupportedLayerError(
                f"{where}: {head}.{key} has a 1-D weight, i.e. a normalization layer (LayerNorm/BatchNorm); "
                "it is not supported"
            )
        indices.append(int(match[1]))
    indices = sorted(set(indices))
    if not indices:
        raise CheckpointError(f"{where}: no {head}.* weights found (the Q-value head is missing)")
    if indices != list(range(0, 2 * len(indices), 2)):
        raise UnsupportedLayerError(
            f"{where}: {head} has layers at indices {indices}; only Linear layers with one ReLU between "
            "them (indices 0, 2, 4, ...) are supported"
        )
    layers: list[nn.Module] = []
    for index in indices:
        weight, bias = head_state.get(f"{index}.weight"), head_state.get(f"{index}.bias")
        if weight is None or bias is None:
            raise CheckpointError(f"{where}: {head}.{index} lacks its weight or bias")
        layers += [_linear(weight, bias, f"{head}.{index}", where), nn.ReLU()]
    return layers[:-1]


def _linear(weight: torch.Tensor, bias: torch.Tensor, key: str, where: str) -> nn.Linear:
    if weight.ndim != 2:
        raise CheckpointError(f"{where}: {key}.weight has shape {tuple(weight.shape)}; a Linear layer needs 2-D")
    return _load(nn.Linear(weight.shape[1], weight.shape[0]), weight, bias, key, where)


def _load(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, key: str, where: str) -> nn.Module:
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise CheckpointError(
            f"{where}: {key}.bias has shape {tuple(bias.shape)} but {key}.weight has {weight.shape[0]} outputs"
        )
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)
    return module


def _fold_quantile_mean(last: nn.Linear, n_quantiles: int, where: str) -> None:
    """Replace the quantile outputs (laid out quantile-major, as QuantileNetwork's `view`) by their mean."""
    if last.out_features % n_quantiles:
        raise CheckpointError(
            f"{where}: the last layer has {last.out_features} outputs, not a multiple of n_quantiles={n_quantiles}"
        )
    n_actions = last.out_features // n_quantiles
    weight = last.weight.data.view(n_quantiles, n_actions, last.in_features).mean(dim=0)
    bias = last.bias.data.view(n_quantiles, n_actions).mean(dim=0)
    last.out_features = n_actions
    last.weight = nn.Parameter(weight)
    last.bias = nn.Parameter(bias)
