"""The loaded DQN: a conversion-ready `nn.Sequential` plus what we know about where it came from.

`load_dqn(source)` (below) reads every kind of source users hold; the SB3-specific parsing lives in
`dqn2snn_plugin.adapters.sb3`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.errors import ObservationError


@dataclass(frozen=True)
class DQNCheckpoint:
    """A DQN ready for conversion.

    `q_network` maps an observation batch in SB3's layout (`[B, 4, 84, 84]` for Atari, `[B, D]` for
    vectors; raw values as the env gives them, SB3's `/255` already folded into the first layer) to
    Q-values `[B, n_actions]`. It holds only Conv2d / Linear / ReLU / Flatten.
    """

    q_network: nn.Sequential
    n_actions: int
    observation_shape: tuple[int, ...]
    policy: str
    algorithm: str
    sb3_version: str | None
    env_id: str | None
    source: str

    def prepare(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Turn raw observations (numpy or torch, uint8 or float, one or a batch) into a float batch."""
        x = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        shape = tuple(self.observation_shape)
        if tuple(x.shape) == shape:
            x = x.unsqueeze(0)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ObservationError(
                f"observations of shape {tuple(x.shape)} do not match this network's input: "
                f"expected [B, {', '.join(map(str, shape))}]"
            )
        device = next(self.q_network.parameters()).device
        return x.to(device=device, dtype=torch.float32)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Q-values `[B, n_actions]` of the (non-spiking) DQN."""
        return self.q_network(self.prepare(obs))

    def act(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Greedy actions `[B]`; ties go to the lowest action index (torch.argmax), as everywhere here."""
        return self.q_values(obs).argmax(dim=1)
