"""Turn an SB3 `QNetwork` / sb3-contrib `QuantileNetwork` state dict into a plain `nn.Sequential`.

The weights alone say nothing about activations or strides, so this module accepts exactly the two
feature extractors SB3 builds for DQNs (`NatureCNN`, `FlattenExtractor`) and ReLU MLP heads, and
names every key it cannot place. Two linear maps are folded into the weights on the way: SB3's
`/255` image scaling (into the first layer) and QR-DQN's mean over quantiles (into the last one).
"""

from __future__ import annotations

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
    scale_input: bool,
    where: str,
) -> nn.Sequential:
    """Build the Q-network from a state dict keyed like a `QNetwork` (`features_extractor.*`, `<head>.*`).

    `head` is `"q_net"` (DQN) or `"quantile_net"` (QR-DQN, whose `n_quantiles` outputs per action are
    averaged into one Q-value). `scale_input` folds SB3's `/255` into the first layer's weights.
    `where` names the source in error messages.
    """
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}: weight {key} holds NaN or inf values")
    features = {k[len("features_extractor.") :]: v for k, v in state.items() if k.startswith("features_extractor.")}
    head_state = {k[len(head) + 1 :]: v for k, v in state.items() if k.startswith(head + ".")}
    strays = sorted(set(state) - {f"features_extractor.{k}" for k in features} - {f"{head}.{k}" for k in head_state})
    if strays:
        raise UnsupportedLayerError(f"{where}: unexpected weight {strays[0]} (not part of an SB3 DQN Q-network)")
    layers = _nature_cnn(features, where) if features else [nn.Flatten()]
    layers += _relu_mlp(head_state, head, where)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    if n_quantiles:
        _fold_quantile_mean(linears[-1], n_quantiles, where)
    if scale_input:
        first = next(m for m in layers if isinstance(m, (nn.Conv2d, nn.Linear)))
        first.weight.data /= 255.0
    return nn.Sequential(*layers)


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
    unknown = sorted(set(features) - NATURE_CNN_KEYS)
    if unknown or set(features) != NATURE_CNN_KEYS:
        key = unknown[0] if unknown else sorted(NATURE_CNN_KEYS - set(features))[0]
        raise UnsupportedLayerError(
            f"{where}: features_extractor.{key} does not fit SB3's NatureCNN; custom features extractors "
            f"are not supported (only {', '.join(SUPPORTED_EXTRACTORS)})"
        )
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


def _load(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor, key: str, where: str) -> nn.Module:
    if tuple(bias.shape) != (weight.shape[0],):
        raise CheckpointError(
            f"{where}: {key}.bias has shape {tuple(bias.shape)} but {key}.weight has {weight.shape[0]} outputs"
        )
    with torch.no_grad():
        module.weight.copy_(weight)
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
