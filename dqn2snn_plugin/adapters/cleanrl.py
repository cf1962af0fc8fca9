"""CleanRL's DQN files: its saved `.cleanrl_model` and its Hugging Face Hub repos.

CleanRL's `dqn_atari.py` saves `torch.save(q_network.state_dict(), f"runs/{run_name}/{exp_name}.cleanrl_model")`
for its `QNetwork` (the Nature CNN as `self.network`, forward `self.network(x / 255.0)`) and uploads that
run folder to the repo `<entity>/<EnvId>-<exp_name>-seed<seed>`: `hf://cleanrl/BreakoutNoFrameskip-v4-dqn_atari-seed1`
holds `dqn_atari.cleanrl_model`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from dqn2snn_plugin.adapters.layouts import Layout, keys_of, nature_sequential

SUFFIX = ".cleanrl_model"
_REPO = re.compile(r"(?P<env_id>.+)-(?P<exp_name>[A-Za-z0-9_]+)-seed\d+")


class QNetwork(nn.Module):
    """CleanRL's `dqn_atari.py` QNetwork, sized from the weights (so any channel or action count)."""

    def __init__(self, state: Mapping[str, torch.Tensor], where: str):
        super().__init__()
        self.network = nature_sequential(state, where, prefix="network.", layout="CleanRL's QNetwork")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x / 255.0)


LAYOUT = Layout("CleanRL QNetwork", keys_of(*(f"network.{i}" for i in (0, 2, 4, 7, 9))), QNetwork)


def hub_file(repo_name: str) -> str | None:
    """The model file of a CleanRL hub repo (`<EnvId>-dqn_atari-seed1` -> `dqn_atari.cleanrl_model`); None
    when the repo name is not CleanRL's."""
    match = _REPO.fullmatch(repo_name)
    return f"{match['exp_name']}{SUFFIX}" if match else None


def hub_env_id(repo_name: str) -> str | None:
    """The env id in a CleanRL hub repo name, as CleanRL wrote it."""
    match = _REPO.fullmatch(repo_name)
    return match["env_id"] if match else None
