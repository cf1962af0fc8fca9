"""State-dict files without an architecture: the public layouts the shapes decide load by themselves with
their source network's Q-values; CleanRL files and hub ids; `network=` and `input_scale=` for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dqn2snn_plugin import load_dqn
from dqn2snn_plugin.adapters.hub import parse_hub_id
from dqn2snn_plugin.checkpoint import describe, parse_input_scale
from dqn2snn_plugin.errors import CheckpointError, ConfigError, UnsupportedLayerError

N_ACTIONS = 6


def _nature_layers(n_actions: int = N_ACTIONS) -> list[nn.Module]:
    return [nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
            nn.Linear(512, n_actions)]


class CleanRLQNetwork(nn.Module):
    """CleanRL's dqn_atari.py QNetwork, as written there."""

    def __init__(self):
        super().__init__()
        self.network = nn.Sequential(*_nature_layers())

    def forward(self, x):
        return self.network(x / 255.0)


class ConvFcNetwork(nn.Module):
    """A Nature CNN written as `conv` and `fc` Sequentials (no scaling in its forward)."""

    def __init__(self):
        super().__init__()
        layers = _nature_layers()
        self.conv, self.fc = nn.Sequential(*layers[:6]), nn.Sequential(*layers[7:])

    def forward(self, x):
        return self.fc(self.conv(x).view(x.size(0), -1))


class NipsNetwork(nn.Module):
    """The NIPS-2013 DQN with `/255` inside its forward."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(4, 16, 8, stride=4), nn.Conv2d(16, 32, 4, stride=2)
        self.fc1, self.fc2 = nn.Linear(2592, 256), nn.Linear(256, N_ACTIONS)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x / 255.0))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _frames(n: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (n, 4, 84, 84), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _saved(module: nn.Module, path: Path) -> Path:
    torch.save(module.state_dict(), path)
    return path


def _q(module: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(obs.float())


@pytest.mark.parametrize(("make", "name", "scaling"), [
    (lambda: nn.Sequential(*_nature_layers()), "Nature CNN (nn.Sequential)", "x 1 assumed"),
    (ConvFcNetwork, "Nature CNN (conv / fc)", "x 1 assumed"),
    (CleanRLQNetwork, "CleanRL QNetwork", "x 1/255 (in the network's forward)"),
    (NipsNetwork, "NIPS-2013 DQN", "x 1/255 (in the network's forward)"),
])
def test_public_layouts_load_without_an_architecture(tmp_path, make, name, scaling, assert_close_q):
    torch.manual_seed(0)
    source = make()
    path = _saved(source, tmp_path / "synthetic-PongNoFrameskip-v4.pt")
    ckpt = load_dqn(path)
    assert (ckpt.policy, ckpt.observation_shape, ckpt.n_actions) == (name, (4, 84, 84), N_ACTIONS)
    assert ckpt.input_scaling.startswith(scaling) and f"input scaling: {scaling}" in describe(ckpt)
    assert ckpt.env_id is None  # `synthetic-PongNoFrameskip-v4` is no registered env id
    assert_close_q(ckpt.q_values(_frames()), _q(source, _frames()))


def test_sb3_qnetwork_keys_still_load_as_sb3(qnet_file):
    ckpt = load_dqn(qnet_file)
    assert ckpt.policy == "CnnPolicy" and "x 1/255 assumed (SB3's default for a CNN" in ckpt.input_scaling


def test_input_scale_is_folded_where_the_file_records_none(tmp_path, assert_close_q):
    torch.manual_seed(0)
    source = nn.Sequential(*_nature_layers())
    path = _saved(source, tmp_path / "nature.pt")
    ckpt = load_dqn(path, input_scale=1 / 255)
    assert ckpt.input_scaling == "x 1/255 (input_scale given; the source records none)"
    assert_close_q(ckpt.q_values(_frames()), _q(source, _frames().float() / 255))


def test_an_input_scale_contradicting_the_forward_is_refused(tmp_path):
    path = _saved(CleanRLQNetwork(), tmp_path / "BreakoutNoFrameskip-v4.cleanrl_model")
    with pytest.raises(ConfigError, match=r"input_scale=1/2 contradicts the recorded input scaling x 1/255"):
        load_dqn(path, input_scale=0.5)


def test_cleanrl_model_file_loads_with_its_q_values(tmp_path, assert_close_q):
    """CleanRL's dqn_atari.py saves `torch.save(q_network.state_dict(), f"runs/{run}/{exp_name}.cleanrl_model")`."""
    torch.manual_seed(1)
    source = CleanRLQNetwork()
    ckpt = load_dqn(_saved(source, tmp_path / "dqn_atari.cleanrl_model"))
    assert ckpt.policy == "CleanRL QNetwork" and ckpt.env_id is None
    assert_close_q(ckpt.q_values(_frames()), _q(source, _frames()))


@pytest.mark.parametrize(("hub_id", "expected"), [
    ("hf://cleanrl/BreakoutNoFrameskip-v4-dqn_atari-seed1",
     ("cleanrl/BreakoutNoFrameskip-v4-dqn_atari-seed1", "dqn_atari.cleanrl_model")),
    ("hf://me/Pong-v5-dqn_atari_jax-seed3", ("me/Pong-v5-dqn_atari_jax-seed3", "dqn_atari_jax.cleanrl_model")),
])
def test_cleanrl_hub_names(hub_id, expected):
    assert parse_hub_id(hub_id) == expected


def test_network_argument_loads_a_file_into_the_users_architecture(tmp_path, assert_close_q):
    """A dueling net's weights in a file no layout describes: load_dqn(path, network=...) folds it exactly."""

    class Dueling(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*_nature_layers()[:7])
            self.value, self.advantage = nn.Linear(3136, 1), nn.Linear(3136, N_ACTIONS)

        def forward(self, x):
            h = self.features(x.float() / 255)
            a = self.advantage(h)
            return self.value(h) + a - a.mean(dim=1, keepdim=True)

    torch.manual_seed(2)
    source = Dueling()
    path = tmp_path / "dqn-PongNoFrameskip-v4.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)  # as DataParallel saves it
    with pytest.raises(CheckpointError, match=r"keys \(module\.features\.0\.weight.* are neither an SB3 Q-network's "
                       r"nor a layout known here: pass the architecture with network="):
        load_dqn(path)
    ckpt = load_dqn(path, network=Dueling())
    assert (ckpt.env_id, ckpt.policy, ckpt.input_scaling) == (
        "PongNoFrameskip-v4", "Dueling", "x 1/255 (in the network's forward)")
    assert_close_q(ckpt.q_values(_frames()), _q(source, _frames()))


def test_network_that_the_weights_do_not_fit_is_named(tmp_path):
    path = _saved(nn.Sequential(*_nature_layers()), tmp_path / "nature.pt")
    with pytest.raises(CheckpointError, match=r"nature\.pt: its weights do not fit the given network \(missing conv1"):
        load_dqn(path, network=NipsNetwork())
    with pytest.raises(CheckpointError, match=r"size mismatch for 9\.weight"):
        load_dqn(path, network=nn.Sequential(*_nature_layers(n_actions=3)))


def test_a_layout_with_other_kernels_is_refused_with_what_to_pass(tmp_path):
    layers = _nature_layers()
    layers[4] = nn.Conv2d(64, 64, 5)
    with pytest.raises(UnsupportedLayerError, match=r"4\.weight has shape \(64, 64, 5, 5\), not a 3x3 kernel: pass .*network="):
        load_dqn(_saved(nn.Sequential(*layers), tmp_path / "odd.pt"))


@pytest.mark.parametrize(("text", "value"), [("1/255", 1 / 255), ("0.5", 0.5), (" 1 ", 1.0), ("2e-3", 0.002)])
def test_parse_input_scale(text, value):
    assert parse_input_scale(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "1/0", "0", "-1/255"])
def test_parse_input_scale_refuses_what_is_not_a_positive_number(text):
    with pytest.raises(ConfigError, match="input scale"):
        parse_input_scale(text)


@pytest.mark.parametrize("bad", [0.0, -1 / 255, float("nan"), float("inf")])
def test_input_scale_must_be_a_positive_finite_number(tmp_path, bad):
    path = _saved(nn.Sequential(*_nature_layers()), tmp_path / "nature.pt")
    with pytest.raises(ConfigError, match=r"input_scale must be a positive finite number"):
        load_dqn(path, input_scale=bad)
