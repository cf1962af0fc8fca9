"""Test helpers: the shared Atari fixture DQNs, loaded once, and a tiny linear stand-in."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch import nn

from dqn2snn_plugin.checkpoint import DQNCheckpoint, load_dqn

# the shared fixtures sit beside the repository (`../shared`), here and in CI
ATARI_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "atari-dqn"


@lru_cache(maxsize=None)
def atari_checkpoint(env_id: str = "BreakoutNoFrameskip-v4") -> DQNCheckpoint:
    """The shared fixture DQN for `env_id` (NatureCNN, raw uint8 input), loaded once per session."""
    path = ATARI_FIXTURES / f"{env_id}.qnet.pt"
    if not path.exists():
        pytest.skip(f"shared fixture not found: {path}")
    return load_dqn(path)


class MarkerPayload:
    """Unpickling this runs a shell command that creates a marker file (proof that code ran)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tiny_checkpoint(weight: torch.Tensor, env_id: str | None = None) -> DQNCheckpoint:
    """A one-layer linear "DQN" on flat observations: Q = obs @ weight.T (handy for exact metric cases)."""
    n_actions, dim = weight.shape
    layer = nn.Linear(dim, n_actions, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return DQNCheckpoint(
        q_network=nn.Sequential(layer), n_actions=n_actions, observation_shape=(dim,), policy="MlpPolicy",
        algorithm="DQN", sb3_version=None, env_id=env_id, source="<test>",
    )
