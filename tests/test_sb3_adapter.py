"""The SB3 adapter gives the same Q-values as SB3 itself, for every kind of DQN / QR-DQN source."""

from __future__ import annotations

import io
import zipfile

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import QRDQN
from sb3_contrib.qrdqn.policies import CnnPolicy as QRCnnPolicy
from stable_baselines3 import DQN
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import CnnPolicy, DQNPolicy
from torch import nn

from dqn2snn_plugin import load_dqn
from dqn2snn_plugin.adapters.hub import parse_hub_id
from dqn2snn_plugin.adapters.sb3 import registered_env_id
from dqn2snn_plugin.errors import CheckpointError, UnsupportedLayerError

ATARI_SPACE = spaces.Box(0, 255, (4, 84, 84), np.uint8)


def _lr(_progress: float) -> float:
    return 1e-4


class ImageEnv(gymnasium.Env):
    """A do-nothing env with an Atari-shaped uint8 image space, so SB3 can build and save CnnPolicies."""

    observation_space = ATARI_SPACE
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


def _vector_obs(dim: int, n: int = 16) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.atari
def test_breakout_zip_matches_sb3_q_net(breakout_zip, atari_observations, assert_close_q):
    model = DQN.load(breakout_zip, custom_objects={"buffer_size": 1}, device="cpu")
    with torch.no_grad():
        theirs = model.policy.q_net(torch.as_tensor(atari_observations))
    ckpt = load_dqn(breakout_zip)
    assert (ckpt.algorithm, ckpt.policy, ckpt.n_actions) == ("DQN", "CnnPolicy", int(model.action_space.n))
    assert ckpt.observation_shape == tuple(model.observation_space.shape)
    assert ckpt.sb3_version == zipfile.ZipFile(breakout_zip).read("_stable_baselines3_version").decode()
    assert ckpt.env_id == "BreakoutNoFrameskip-v4"
    assert_close_q(ckpt.q_values(atari_observations), theirs)


@pytest.mark.atari
def test_qnet_state_dict_matches_sb3_q_net(qnet_file, atari_observations, assert_close_q):
    state = torch.load(qnet_file, weights_only=True)
    n_actions = state["q_net.0.bias"].shape[0]
    policy = CnnPolicy(ATARI_SPACE, spaces.Discrete(n_actions), _lr)
    policy.q_net.load_state_dict(state)
    with torch.no_grad():
        theirs = policy.q_net(torch.as_tensor(atari_observations))
    ckpt = load_dqn(qnet_file)
    assert (ckpt.n_actions, ckpt.observation_shape, ckpt.sb3_version) == (n_actions, (4, 84, 84), None)
    assert ckpt.env_id == qnet_file.name.removesuffix(".qnet.pt")
    assert_close_q(ckpt.q_values(atari_observations), theirs)
    # SB3's /255 sits in the first conv's weights, not in its bias
    conv = ckpt.q_network[0]
    torch.testing.assert_close(conv.weight.detach(), state["features_extractor.cnn.0.weight"] / 255)
    torch.testing.assert_close(conv.bias.detach(), state["features_extractor.cnn.0.bias"])


@pytest.mark.parametrize("net_arch", [[], [64], [64, 64]])
def test_mlp_zip_and_model_match_sb3(save_sb3, net_arch, assert_close_q):
    model, path = save_sb3(DQN, "dqn-CartPole-v1", buffer_size=1, policy_kwargs={"net_arch": net_arch})
    obs = _vector_obs(4)
    with torch.no_grad():
        theirs = model.policy.q_net(torch.as_tensor(obs))
    for source in (path, model, model.policy):
        ckpt = load_dqn(source)
        assert (ckpt.algorithm, ckpt.policy, ckpt.n_actions, ckpt.observation_shape) == ("DQN", "MlpPolicy", 2, (4,))
        assert sum(isinstance(m, torch.nn.Linear) for m in ckpt.q_network) == len(net_arch) + 1
        assert_close_q(ckpt.q_values(obs), theirs)
    assert load_dqn(path).env_id == "CartPole-v1"


def test_rl_zoo_1x_zip_matches_sb3_policy_built_from_its_weights(zoo_zip, assert_close_q):
    """SB3's DQN.load cannot open these 2021 zips here; SB3's DQNPolicy fed their policy.pth is the reference."""
    ckpt = load_dqn(zoo_zip)
    state = torch.load(io.BytesIO(zipfile.ZipFile(zoo_zip).read("policy.pth")), weights_only=True)
    dim = ckpt.observation_shape[0]
    space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
    policy = DQNPolicy(space, spaces.Discrete(ckpt.n_actions), _lr, net_arch=[256, 256])
    policy.load_state_dict(state)
    obs = _vector_obs(dim)
    with torch.no_grad():
        theirs = policy.q_net(torch.as_tensor(obs))
    assert (ckpt.sb3_version, ckpt.env_id) == ("1.0rc0", zoo_zip.stem)
    assert_close_q(ckpt.q_values(obs), theirs)


@pytest.mark.parametrize("normalize_images", [True, False])
def test_cnn_zip_folds_255_only_when_sb3_normalizes(save_sb3, normalize_images, assert_close_q):
    model, path = save_sb3(DQN, "dqn-Image-v0", policy="CnnPolicy", env=ImageEnv(), buffer_size=1,
                           policy_kwargs={"normalize_images": normalize_images})
    obs = np.stack([ATARI_SPACE.sample() for _ in range(3)])
    with torch.no_grad():
        theirs = model.policy.q_net(torch.as_tensor(obs))
    ckpt = load_dqn(path)
    assert (ckpt.policy, ckpt.observation_shape, ckpt.n_actions) == ("CnnPolicy", (4, 84, 84), 3)
    assert_close_q(ckpt.q_values(obs), theirs)


def test_qrdqn_zip_and_model_fold_quantile_mean(save_sb3, assert_close_q):
    model, path = save_sb3(QRDQN, "qrdqn-CartPole-v1", buffer_size=1,
                           policy_kwargs={"net_arch": [32], "n_quantiles": 7})
    obs = _vector_obs(4)
    with torch.no_grad():
        theirs = model.policy.quantile_net(torch.as_tensor(obs)).mean(dim=1)
    for source in (path, model, model.policy):
        ckpt = load_dqn(source)
        assert (ckpt.algorithm, ckpt.n_actions, ckpt.q_network[-1].out_features) == ("QRDQN", 2, 2)
        assert_close_q(ckpt.q_values(obs), theirs)
        assert torch.equal(ckpt.act(obs), theirs.argmax(dim=1))
    assert load_dqn(path).env_id == "CartPole-v1"


@pytest.mark.atari
def test_qrdqn_cnn_policy_folds_both_maps(atari_observations, assert_close_q):
    policy = QRCnnPolicy(ATARI_SPACE, spaces.Discrete(5), _lr, n_quantiles=4)
    with torch.no_grad():
        theirs = policy.quantile_net(torch.as_tensor(atari_observations)).mean(dim=1)
    ckpt = load_dqn(policy)
    assert (ckpt.algorithm, ckpt.policy, ckpt.n_actions) == ("QRDQN", "CnnPolicy", 5)
    assert_close_q(ckpt.q_values(atari_observations), theirs)


@pytest.fixture
def fake_hub(monkeypatch):
    """`fake_hub(path)` makes huggingface_hub "download" `path`; returns the list of (repo_id, filename) asked for."""
    import huggingface_hub

    def serve(path):
        calls = []
        monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                            lambda repo_id, filename: calls.append((repo_id, filename)) or str(path))
        return calls

    return serve


def test_hub_id_downloads_rl_zoo_file_then_loads_it(fake_hub, breakout_zip):
    calls = fake_hub(breakout_zip)
    ckpt = load_dqn("hf://sb3/dqn-BreakoutNoFrameskip-v4")
    assert calls == [("sb3/dqn-BreakoutNoFrameskip-v4", "dqn-BreakoutNoFrameskip-v4.zip")]
    assert ckpt.source == "hf://sb3/dqn-BreakoutNoFrameskip-v4"
    assert (ckpt.env_id, ckpt.n_actions) == ("BreakoutNoFrameskip-v4", 4)


def test_cleanrl_hub_id_downloads_its_model_file_then_loads_it(fake_hub, tmp_path, assert_close_q):
    """CleanRL uploads runs/<run>/dqn_atari.cleanrl_model, its QNetwork's state dict (`network.*`, x / 255.0)."""
    torch.manual_seed(1)
    network = nn.Sequential(nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
                            nn.Linear(512, 4))
    path = tmp_path / "dqn_atari.cleanrl_model"
    torch.save({f"network.{k}": v for k, v in network.state_dict().items()}, path)
    calls = fake_hub(path)
    ckpt = load_dqn("hf://cleanrl/BreakoutNoFrameskip-v4-dqn_atari-seed1")
    assert calls == [("cleanrl/BreakoutNoFrameskip-v4-dqn_atari-seed1", "dqn_atari.cleanrl_model")]
    assert (ckpt.source, ckpt.env_id, ckpt.policy) == (
        "hf://cleanrl/BreakoutNoFrameskip-v4-dqn_atari-seed1", "BreakoutNoFrameskip-v4", "CleanRL QNetwork")
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        assert_close_q(ckpt.q_values(obs), network(obs.float() / 255.0))


def test_hub_network_failure_is_a_checkpoint_error(monkeypatch):
    import huggingface_hub

    def offline(repo_id: str, filename: str) -> str:
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(CheckpointError, match=r"hf://sb3/dqn-PongNoFrameskip-v4.*could not download.*huggingface.co"):
        load_dqn("hf://sb3/dqn-PongNoFrameskip-v4")


def test_hub_without_huggingface_hub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match=r'pip install "dqn2snn-plugin\[hub\]"'):
        load_dqn("hf://sb3/dqn-PongNoFrameskip-v4")


@pytest.mark.parametrize(
    ("hub_id", "expected"),
    [
        ("hf://sb3/dqn-PongNoFrameskip-v4", ("sb3/dqn-PongNoFrameskip-v4", "dqn-PongNoFrameskip-v4.zip")),
        ("hf://me/agents/best.zip", ("me/agents", "best.zip")),
    ],
)
def test_parse_hub_id(hub_id, expected):
    assert parse_hub_id(hub_id) == expected


def test_malformed_hub_id_is_refused():
    with pytest.raises(CheckpointError, match="hf://<org>/<repo>"):
        load_dqn("hf://just-a-name")


# ---------------------------------------------------------------- QR-DQN quantile counts
# A QuantileNetwork has n_quantiles x n_actions outputs; the loader must split them as sb3-contrib
# does, whatever n_quantiles was. Reference: sb3-contrib's own quantile_net, averaged over quantiles.


def _qr_policy(n_actions: int, n_quantiles: int, cnn: bool = False):
    if cnn:
        return QRCnnPolicy(ATARI_SPACE, spaces.Discrete(n_actions), _lr, n_quantiles=n_quantiles)
    from sb3_contrib.qrdqn.policies import QRDQNPolicy

    return QRDQNPolicy(spaces.Box(-1, 1, (6,), np.float32), spaces.Discrete(n_actions), _lr,
                       n_quantiles=n_quantiles, net_arch=[8])


def _check_qr(ckpt, policy, obs, n_actions, assert_close_q):
    with torch.no_grad():
        theirs = policy.quantile_net(torch.as_tensor(obs)).mean(dim=1)
    assert (ckpt.algorithm, ckpt.n_actions) == ("QRDQN", n_actions)
    assert_close_q(ckpt.q_values(obs), theirs)


@pytest.mark.parametrize("n_quantiles", [200, 50])
def test_qrdqn_state_dict_splits_quantiles_by_the_envs_action_count(tmp_path, n_quantiles, assert_close_q):
    """Acrobot-v1 has 3 actions: 3 x 50 = 150 outputs once came back as 1 action of 150 / 200 quantiles."""
    policy = _qr_policy(3, n_quantiles)
    path = tmp_path / "qrdqn-Acrobot-v1.pt"
    torch.save(policy.quantile_net.state_dict(), path)
    _check_qr(load_dqn(path), policy, _vector_obs(6), 3, assert_close_q)
    # a whole policy's state dict, and an env id given instead of read from the name
    anonymous = tmp_path / "agent.pt"
    torch.save(policy.state_dict(), anonymous)
    _check_qr(load_dqn(anonymous, env_id="Acrobot-v1"), policy, _vector_obs(6), 3, assert_close_q)
    _check_qr(load_dqn(anonymous, n_quantiles=n_quantiles), policy, _vector_obs(6), 3, assert_close_q)


@pytest.mark.atari
def test_qrdqn_cnn_state_dict_with_50_quantiles_on_breakout(tmp_path, atari_observations, assert_close_q):
    """The case the review found: 50 quantiles x Breakout's 4 actions = 200 outputs, not 1 action."""
    policy = _qr_policy(4, 50, cnn=True)
    path = tmp_path / "qrdqn-BreakoutNoFrameskip-v4.pt"
    torch.save(policy.quantile_net.state_dict(), path)
    _check_qr(load_dqn(path), policy, atari_observations, 4, assert_close_q)


def test_qrdqn_state_dict_of_an_unknown_env_is_refused_with_what_to_pass(tmp_path):
    path = tmp_path / "agent.pt"
    torch.save(_qr_policy(4, 50).quantile_net.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"agent\.pt: .*200 outputs .*env_id=.*--env-id.*n_quantiles"):
        load_dqn(path)
    with pytest.raises(CheckpointError, match=r"200 outputs, not a multiple of the 3 actions"):
        load_dqn(path, env_id="Acrobot-v1")  # the wrong env: refused, not split 66 2/3 ways


@pytest.mark.parametrize("n_quantiles", [200, 50])
@pytest.mark.parametrize("record_quantiles", [True, False])
def test_qrdqn_zip_splits_quantiles_by_its_recorded_spaces(save_sb3, tmp_path, n_quantiles, record_quantiles,
                                                           assert_close_q):
    """The zip records the action space; n_quantiles only when the user set it (default 200 is implicit)."""
    kwargs = {"net_arch": [8], **({"n_quantiles": n_quantiles} if record_quantiles or n_quantiles != 200 else {})}
    model, path = save_sb3(QRDQN, "qr", env="Acrobot-v1", buffer_size=1, policy_kwargs=kwargs)
    if not record_quantiles:  # a zip whose policy_kwargs do not name n_quantiles: read from the action count
        import json

        data = json.loads(zipfile.ZipFile(path).read("data"))
        data["policy_kwargs"].pop("n_quantiles", None)
        stripped = tmp_path / "stripped.zip"
        with zipfile.ZipFile(path) as old, zipfile.ZipFile(stripped, "w") as new:
            for name in old.namelist():
                new.writestr(name, json.dumps(data) if name == "data" else old.read(name))
        path = stripped
    _check_qr(load_dqn(path), model.policy, _vector_obs(6), 3, assert_close_q)


# ---------------------------------------------------------------- custom plain-CNN features extractors
# SB3 records only the class name of a custom extractor (its code is a pickle, never loaded): strides and
# paddings follow from the recorded observation space and the weight shapes, where only one choice fits.


class MinAtarCNN(BaseFeaturesExtractor):
    """The MinAtar network's body (Young & Tian 2019): conv 16x3x3 stride 1 on 10x10 planes, ReLU, fc 128, ReLU."""

    def __init__(self, observation_space, features_dim: int = 128, kernel: int = 3, stride: int = 1):
        super().__init__(observation_space, features_dim)
        channels, side = observation_space.shape[0], observation_space.shape[1]
        out = (side - kernel) // stride + 1
        self.conv = nn.Conv2d(channels, 16, kernel, stride=stride)
        self.fc = nn.Linear(16 * out * out, features_dim)

    def forward(self, obs):
        return torch.relu(self.fc(torch.relu(self.conv(obs)).flatten(1)))


class PlanesEnv(gymnasium.Env):
    """A do-nothing env with MinAtar-shaped observations, channel-first (`space` given)."""

    action_space = spaces.Discrete(6)

    def __init__(self, space: spaces.Box):
        self.observation_space = space

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


@pytest.mark.parametrize(("space", "scaled"), [
    (spaces.Box(0, 1, (4, 10, 10), np.float32), False),   # MinAtar planes: SB3 feeds them as they are
    (spaces.Box(0, 255, (4, 10, 10), np.uint8), True),    # an image space: SB3 divides by 255
])
def test_custom_cnn_extractor_zip_matches_sb3(save_sb3, space, scaled, assert_close_q):
    kwargs = {"net_arch": [], "features_extractor_class": MinAtarCNN}
    model, path = save_sb3(DQN, "dqn-MinAtar-Breakout-v1", env=PlanesEnv(space), buffer_size=1, policy_kwargs=kwargs)
    # MinAtar's planes are 0/1 (bool there; as numbers here, which the observation checks accept)
    obs = np.stack([space.sample() for _ in range(8)]) if scaled else (
        np.random.default_rng(0).random((8, *space.shape)) < 0.3).astype(np.float32)
    with torch.no_grad():
        theirs = model.policy.q_net(torch.as_tensor(obs))
    ckpt = load_dqn(path)
    assert [type(m).__name__ for m in ckpt.q_network] == ["Conv2d", "ReLU", "Flatten", "Linear", "ReLU", "Linear"]
    assert (ckpt.q_network[0].stride, ckpt.q_network[0].padding) == ((1, 1), (0, 0))
    assert (ckpt.env_id, ckpt.observation_shape, ckpt.n_actions) == ("MinAtar/Breakout-v1", (4, 10, 10), 6)
    assert ckpt.input_scaling.startswith("x 1/255" if scaled else "x 1 (SB3 feeds observations unscaled")
    assert "strides 1 and paddings 0" in ckpt.assumptions[0] and "a ReLU after each" in ckpt.assumptions[0]
    assert_close_q(ckpt.q_values(obs), theirs)
    traced = load_dqn(model)  # in memory: its forward is traced, so nothing is assumed
    assert traced.assumptions == () and traced.input_scaling.startswith("x 1/255" if scaled else "x 1 (")
    assert_close_q(traced.q_values(obs), theirs)


def test_custom_cnn_extractor_that_two_architectures_fit_is_refused(save_sb3):
    """A 4x4 conv on 8x8 planes gives 3x3 with stride 2 and no padding, but also e.g. with stride 3 and padding 1."""
    space = spaces.Box(0, 1, (2, 8, 8), np.float32)
    kwargs = {"net_arch": [], "features_extractor_class": MinAtarCNN,
              "features_extractor_kwargs": {"kernel": 4, "stride": 2}}
    _, path = save_sb3(DQN, "ambiguous", env=PlanesEnv(space), buffer_size=1, policy_kwargs=kwargs)
    with pytest.raises(UnsupportedLayerError, match=r"ambiguous\.zip: features_extractor \(MinAtarCNN\): 4 architectures "
                                                    r"\(e\.g\. strides 2 and paddings 0 and strides 3 and paddings 1\) "
                                                    r"turn the 2x8x8 observations .*network="):
        load_dqn(path)


@pytest.mark.parametrize(("stem", "env_id"), [
    ("dqn-BreakoutNoFrameskip-v4", "BreakoutNoFrameskip-v4"),
    ("CartPole-v1", "CartPole-v1"),
    ("qrdqn-LunarLander-v2", "LunarLander-v2"),            # RL-Zoo's id; gymnasium now registers v3
    ("dqn-MinAtar-Breakout-v1", "MinAtar/Breakout-v1"),    # RL-Zoo writes '/' as '-'
    ("synthetic-PongNoFrameskip-v4", None),
    ("my-agent-v2", None),
])
def test_env_ids_from_file_names_are_registered_ids_or_nothing(stem, env_id):
    assert registered_env_id(stem) == env_id


def test_minatar_ids_are_none_when_minatar_is_not_installed(monkeypatch):
    import gymnasium

    for env_id in [k for k in gymnasium.registry if k.startswith("MinAtar/")]:
        monkeypatch.delitem(gymnasium.registry, env_id)
    monkeypatch.setitem(__import__("sys").modules, "minatar.gym", None)  # as if not installed
    assert registered_env_id("dqn-MinAtar-Breakout-v1") is None


def test_an_undecodable_version_is_shown_as_escapes_not_replacement_characters(breakout_zip, tmp_path):
    """`inspect` must show what the file holds: bytes that are not UTF-8 appear as \\xNN escapes."""
    edited = tmp_path / "dqn-BreakoutNoFrameskip-v4.zip"
    with zipfile.ZipFile(breakout_zip) as old, zipfile.ZipFile(edited, "w") as new:
        for name in old.namelist():
            new.writestr(name, b"2.9\xff\x00" if name == "_stable_baselines3_version" else old.read(name))
    version = load_dqn(edited).sb3_version
    assert version == "2.9\\xff\\x00" and "\ufffd" not in version
