"""The common public state-dict layouts whose weight names and shapes decide the architecture.

A bare state dict records no strides or activations, so a file loads by itself only when its keys name
one of these layouts exactly and its kernel sizes are the layout's; the architecture is then rebuilt as
the reference code writes it (forward included, so an input scaling inside it is folded as written),
and `torch_graph` reads it like any module. Anything else is refused with a pointer to `network=`.

- Nature CNN as a bare `nn.Sequential` (keys `0, 2, 4, 7, 9`) and as `conv.0/2/4` + `fc.0/2`
  (no scaling in their forwards: the input scale is stated as assumed, see `checkpoint.load_dqn`);
- the NIPS-2013 DQN (Mnih et al. 2013): conv 16x8x8/4, ReLU, conv 32x4x4/2, ReLU, fc 2592->256, ReLU,
  fc 256->n; keys `conv1, conv2, fc1, fc2`; its forward divides by 255;
- CleanRL's `QNetwork` (`network.0/2/4/7/9`, forward `network(x / 255.0)`): see `adapters.cleanrl`.
SB3's own `QNetwork` keys are read by `adapters.sb3`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from dqn2snn_plugin.errors import UnsupportedLayerError

# (kernel, stride) of the Nature CNN's convolutions (Mnih et al. 2015), and of the NIPS-2013 DQN's
NATURE = ((8, 4), (4, 2), (3, 1))
NIPS_2013 = ((8, 4), (4, 2))


@dataclass(frozen=True)
class Layout:
    """A public layout: its exact key set and a builder of its architecture, sized from the weights."""

    name: str
    keys: frozenset[str]
    build: Callable[[Mapping[str, torch.Tensor], str], nn.Module]


def keys_of(*modules: str) -> frozenset[str]:
    """The weight and bias keys of the named modules."""
    return frozenset(f"{m}.{p}" for m in modules for p in ("weight", "bias"))


def convs(state: Mapping[str, torch.Tensor], names: list[str], geometry: tuple, layout: str, where: str) -> list[nn.Module]:
    """Conv2d + ReLU per name, sized from the weights, with the layout's strides; refused if a kernel differs."""
    layers: list[nn.Module] = []
    for name, (kernel, stride) in zip(names, geometry):
        weight = state[f"{name}.weight"]
        if weight.ndim != 4 or tuple(weight.shape[2:]) != (kernel, kernel):
            raise UnsupportedLayerError(
                f"{where}: the keys are those of {layout}, but {name}.weight has shape {tuple(weight.shape)}, not a "
                f"{kernel}x{kernel} kernel: pass the architecture with network=..."
            )
        layers += [nn.Conv2d(weight.shape[1], weight.shape[0], kernel, stride=stride), nn.ReLU()]
    return layers


def linears(state: Mapping[str, torch.Tensor], names: list[str], layout: str, where: str) -> list[nn.Module]:
    """Linear layers with a ReLU between them, sized from the weights."""
    layers: list[nn.Module] = []
    for name in names:
        weight = state[f"{name}.weight"]
        if weight.ndim != 2:
            raise UnsupportedLayerError(f"{where}: the keys are those of {layout}, but {name}.weight is not 2-D")
        layers += [nn.Linear(weight.shape[1], weight.shape[0]), nn.ReLU()]
    return layers[:-1]


def nature_sequential(state: Mapping[str, torch.Tensor], where: str, prefix: str = "", layout: str = "") -> nn.Sequential:
    """The Nature CNN as one `nn.Sequential` (conv, ReLU x3, Flatten, fc, ReLU, fc: keys 0, 2, 4, 7, 9)."""
    layout = layout or "a Nature-CNN nn.Sequential"
    body = convs(state, [f"{prefix}{i}" for i in (0, 2, 4)], NATURE, layout, where)
    return nn.Sequential(*body, nn.Flatten(), *linears(state, [f"{prefix}{i}" for i in (7, 9)], layout, where))


class ConvFc(nn.Module):
    """The Nature CNN written as `conv` (Sequential of 3 convs) and `fc` (Sequential of 2 Linears)."""

    def __init__(self, state: Mapping[str, torch.Tensor], where: str):
        super().__init__()
        layout = "a Nature CNN in conv.* / fc.* Sequentials"
        self.conv = nn.Sequential(*convs(state, ["conv.0", "conv.2", "conv.4"], NATURE, layout, where))
        self.fc = nn.Sequential(*linears(state, ["fc.0", "fc.2"], layout, where))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class Nips2013(nn.Module):
    """The NIPS-2013 DQN (Mnih et al., "Playing Atari with Deep Reinforcement Learning"), pixels / 255 inside."""

    def __init__(self, state: Mapping[str, torch.Tensor], where: str):
        super().__init__()
        layout = "the NIPS-2013 DQN (conv1, conv2, fc1, fc2)"
        self.conv1, _, self.conv2, _ = convs(state, ["conv1", "conv2"], NIPS_2013, layout, where)
        self.fc1, _, self.fc2 = linears(state, ["fc1", "fc2"], layout, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x.float() / 255.0))
        x = torch.relu(self.conv2(x))
        return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))


LAYOUTS = (
    Layout("Nature CNN (nn.Sequential)", keys_of("0", "2", "4", "7", "9"), nature_sequential),
    Layout("Nature CNN (conv / fc)", keys_of("conv.0", "conv.2", "conv.4", "fc.0", "fc.2"), ConvFc),
    Layout("NIPS-2013 DQN", keys_of("conv1", "conv2", "fc1", "fc2"), Nips2013),
)


def match_layout(state: Mapping[str, torch.Tensor], layouts: tuple[Layout, ...]) -> Layout | None:
    """The layout whose key set is exactly the state dict's, if any."""
    keys = frozenset(state)
    return next((layout for layout in layouts if layout.keys == keys), None)
