"""Exact weight folds: linear maps that sit between a network's layers, moved into the layers' weights.

Each function returns new layers (the inputs are never changed) computing exactly what the layers it
replaces computed: an input or output scaling, a BatchNorm after a Conv2d / Linear, an unpadded
AvgPool2d before or after a Conv2d (one Conv2d with a wider kernel and a longer stride) or before a
Linear, and the streams of a dueling head with their final linear mix (one plain head). `torch_graph`
decides where they apply; its output check confirms them on every network it reads.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def with_batch_norm(layer: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of a Conv2d / Linear followed by an eval-mode BatchNorm, as one layer."""
    gain = (norm.weight if norm.affine else torch.ones_like(norm.running_var)) / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias if norm.affine else torch.zeros_like(norm.running_mean)
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        folded.weight.mul_(gain.view(-1, *[1] * (folded.weight.ndim - 1)))
        folded.bias = nn.Parameter((bias_of(layer) - norm.running_mean) * gain + shift)
    return folded


def merged_streams(streams: list[tuple[nn.Module, ...]], mixes: list[torch.Tensor]) -> list[nn.Module]:
    """`sum_k mixes[k] @ streams[k](h)` for Linear/ReLU streams of equal depth on one input h, as one
    Linear/ReLU stack: the hidden layers side by side (block-diagonal after the first), the mixes in the last."""
    layers: list[nn.Module] = []
    depth = len(streams[0])
    with torch.no_grad():
        for i in range(0, depth - 1, 2):
            parts = [s[i] for s in streams]
            weight = torch.cat([p.weight for p in parts]) if i == 0 else torch.block_diag(*[p.weight for p in parts])
            layers += [linear_layer(weight, torch.cat([bias_of(p) for p in parts])), nn.ReLU()]
        heads = [mix @ s[-1].weight for mix, s in zip(mixes, streams)]
        weight = sum(heads) if depth == 1 else torch.cat(heads, dim=1)  # one shared input, or one block each
        out_bias = sum(mix @ bias_of(s[-1]) for mix, s in zip(mixes, streams))
    return [*layers, linear_layer(weight, out_bias)]


def plain_conv(layer: nn.Module | None) -> bool:
    """A Conv2d whose kernel an average pooling can be folded into (no groups, no dilation)."""
    return isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.dilation == (1, 1)


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """A kernel size, stride or padding as (height, width), as torch accepts either."""
    return (value, value) if isinstance(value, int) else tuple(value)


def bias_of(layer: nn.Module) -> torch.Tensor:
    """A Conv2d's / Linear's bias, zeros when it has none (so every fold can add to it)."""
    return layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])


def linear_layer(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """A new Linear holding `weight` and `bias`."""
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def scale_(tensor: torch.Tensor, scale: float) -> None:
    """`tensor *= scale` in place; a scale 1/n (SB3's and CleanRL's 1/255) divides by n, which rounds
    each weight exactly as `x / 255` does (multiplying by the rounded 1/255 can differ in the last bit)."""
    inverse = 1 / scale
    if scale < 1 and math.isclose(inverse, round(inverse), rel_tol=1e-12):
        tensor.div_(float(round(inverse)))
    else:
        tensor.mul_(scale)


def scaled(layer: nn.Module, scale: float, *, bias: bool) -> nn.Module:
    """A copy of a Conv2d / Linear with its weight (and, for an output scaling, its bias) times `scale`."""
    layer = copy.deepcopy(layer)
    with torch.no_grad():
        scale_(layer.weight, scale)
        if bias and layer.bias is not None:
            scale_(layer.bias, scale)
    return layer


def _box(kernel: tuple[int, int], channels: int) -> torch.Tensor:
    """The averaging kernel 1/(kh*kw) of an AvgPool2d, one per group."""
    return torch.full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]))


def conv_then_pool(conv: nn.Conv2d, kernel: tuple[int, int], stride: tuple[int, int]) -> nn.Conv2d:
    """A Conv2d followed by an unpadded AvgPool2d as one Conv2d: each (out, in) kernel spread over the
    pooling window (kernel k + (p - 1) * s, stride s * ps)."""
    taps = conv.weight.reshape(-1, 1, *conv.kernel_size)  # every (out, in) kernel as one group
    weight = F.conv_transpose2d(_box(kernel, len(taps)).reshape(1, len(taps), *kernel), taps,
                                stride=conv.stride, groups=len(taps))
    return _new_conv(conv, weight.reshape(conv.out_channels, conv.in_channels, *weight.shape[2:]), bias_of(conv),
                     stride=(conv.stride[0] * stride[0], conv.stride[1] * stride[1]), padding=conv.padding)


def pool_then_conv(pool: nn.AvgPool2d, conv: nn.Conv2d) -> nn.Conv2d:
    """An unpadded AvgPool2d followed by an unpadded Conv2d as one Conv2d."""
    kernel, stride = pair(pool.kernel_size), pair(pool.stride)
    taps = conv.weight.reshape(1, -1, *conv.kernel_size)
    weight = F.conv_transpose2d(taps, _box(kernel, taps.shape[1]), stride=stride, groups=taps.shape[1])
    return _new_conv(conv, weight.reshape(conv.out_channels, conv.in_channels, *weight.shape[2:]), bias_of(conv),
                     stride=(stride[0] * conv.stride[0], stride[1] * conv.stride[1]), padding=0)


def _new_conv(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, *, stride, padding) -> nn.Conv2d:
    """A new Conv2d with `like`'s channels and the given weight, bias, stride and padding."""
    conv = nn.Conv2d(like.in_channels, like.out_channels, tuple(weight.shape[2:]), stride=stride, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


def pool_then_linear(pool: nn.AvgPool2d, linear: nn.Linear, shape: tuple[int, ...]) -> nn.Linear:
    """An AvgPool2d on `shape` (C, H, W), flattened, then a Linear: one Linear on the unpooled input."""
    x = torch.zeros(1, *shape, requires_grad=True)
    with torch.enable_grad():
        pooled = F.avg_pool2d(x, pool.kernel_size, pool.stride).flatten(1)
        (weight,) = torch.autograd.grad(pooled, x, grad_outputs=linear.weight.unsqueeze(1).detach(), is_grads_batched=True)
    return linear_layer(weight.reshape(linear.out_features, -1), bias_of(linear))
