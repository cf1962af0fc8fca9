"""`load_dqn`: dispatch over sources, the built network's invariants, and clear errors on bad input."""

from __future__ import annotations

import base64
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from sb3_contrib import QRDQN
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from dqn2snn_plugin import DQNCheckpoint, load_dqn
from dqn2snn_plugin.errors import CheckpointError, ConfigError, UnsupportedLayerError

from conftest import MarkerPayload

PLAIN_LAYERS = (nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten)


class TinyExtractor(BaseFeaturesExtractor):
    """A custom features extractor (one Linear + Tanh), which the conversion must refuse."""

    def __init__(self, observation_space, features_dim: int = 8):
        super().__init__(observation_space, features_dim)
        self.body = nn.Sequential(nn.Linear(observation_space.shape[0], features_dim), nn.Tanh())

    def forward(self, obs):
        return self.body(obs)


def _rewrite_zip(src: Path, dst: Path, **replace: bytes | None) -> Path:
    """Copy an SB3 zip, replacing entries (`None` drops one); keys use `_` for `.` (policy_pth)."""
    replace = {k.replace("_pth", ".pth"): v for k, v in replace.items()}
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for name in old.namelist():
            content = replace.get(name, old.read(name))
            if content is not None:
                new.writestr(name, content)
    return dst


def _policy_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(zipfile.ZipFile(path).read("policy.pth")), weights_only=True)


def _tensor_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture
def cartpole(save_sb3):
    """An untrained CartPole DQN (net_arch [16]) and its zip."""
    return save_sb3(DQN, "dqn-CartPole-v1", buffer_size=1, policy_kwargs={"net_arch": [16]})


def test_every_fixture_loads_as_a_plain_float32_eval_network(any_checkpoint):
    ckpt = load_dqn(any_checkpoint)
    assert isinstance(ckpt, DQNCheckpoint) and isinstance(ckpt.q_network, nn.Sequential)
    assert all(isinstance(m, PLAIN_LAYERS) for m in ckpt.q_network)
    assert not ckpt.q_network.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in ckpt.q_network.parameters())
    assert ckpt.q_values(torch.zeros(2, *ckpt.observation_shape)).shape == (2, ckpt.n_actions)
    assert ckpt.source == str(any_checkpoint) and ckpt.algorithm == "DQN"


def test_env_id_argument_overrides_the_file_name(cartpole):
    _, path = cartpole
    assert load_dqn(path).env_id == "CartPole-v1"
    assert load_dqn(path, env_id="CartPole-v0").env_id == "CartPole-v0"
    assert load_dqn(path.rename(path.with_name("agent.zip"))).env_id is None


def test_path_objects_and_strings_both_work(cartpole):
    _, path = cartpole
    assert load_dqn(str(path)).observation_shape == load_dqn(path).observation_shape == (4,)


def test_pickled_fields_are_never_unpickled(cartpole, tmp_path):
    """A zip whose `data` pickles run code: its valid policy.pth loads and the code never runs."""
    model, path = cartpole
    marker = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(MarkerPayload(marker))).decode()
    data = json.loads(zipfile.ZipFile(path).read("data"))
    data["observation_space"][":serialized:"] = payload
    data["policy_class"][":serialized:"] = payload
    evil = _rewrite_zip(path, tmp_path / "evil.zip", data=json.dumps(data).encode())

    ckpt = load_dqn(evil)
    torch.testing.assert_close(ckpt.q_network[1].weight, model.policy.q_net.q_net[0].weight)
    assert not marker.exists()
    # the payload is live: SB3's own reader runs it
    from stable_baselines3.common.save_util import load_from_zip_file

    load_from_zip_file(evil, device="cpu")
    assert marker.exists()


def test_code_in_a_pt_file_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.qnet.pt"
    path.write_bytes(pickle.dumps({"q_net.0.weight": MarkerPayload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.qnet\.pt: cannot be read as tensors.*never loaded") as info:
        load_dqn(path)
    assert not marker.exists()
    assert "weights_only" not in str(info.value)  # never advise loading with weights_only=False


def test_not_a_zip(tmp_path):
    path = tmp_path / "notes.zip"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.zip: not a readable zip"):
        load_dqn(path)


def test_truncated_zip(cartpole, tmp_path):
    _, path = cartpole
    cut = tmp_path / "cut.zip"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.zip: not a readable zip"):
        load_dqn(cut)


def test_missing_policy_pth(cartpole, tmp_path):
    _, path = cartpole
    broken = _rewrite_zip(path, tmp_path / "nopolicy.zip", policy_pth=None)
    with pytest.raises(CheckpointError, match=r"nopolicy\.zip: the zip has no policy\.pth"):
        load_dqn(broken)


@pytest.mark.parametrize("algo_cls", [PPO, A2C])
def test_other_algorithms_are_named(save_sb3, tmp_path, algo_cls):
    name = algo_cls.__name__
    _, path = save_sb3(algo_cls, f"{name.lower()}-CartPole-v1", n_steps=64, policy_kwargs={"net_arch": [8]})
    with pytest.raises(CheckpointError, match=rf"{path.name}: this is a {name} checkpoint"):
        load_dqn(path)
    weights = tmp_path / "policy.pt"
    weights.write_bytes(zipfile.ZipFile(path).read("policy.pth"))
    with pytest.raises(CheckpointError, match=r"policy\.pt: the weights belong to an actor-critic policy \(PPO/A2C\)"):
        load_dqn(weights)


def test_tanh_activation_is_named(save_sb3):
    model, path = save_sb3(DQN, "tanh", buffer_size=1, policy_kwargs={"net_arch": [8], "activation_fn": nn.Tanh})
    tanh = r"tanh\.zip: activation_fn is torch\.nn\.modules\.activation\.Tanh;"
    with pytest.raises(UnsupportedLayerError, match=tanh):
        load_dqn(path)
    with pytest.raises(UnsupportedLayerError, match=r"q_net\.1 is a Tanh"):
        load_dqn(model)


def test_layer_norm_is_named(cartpole, tmp_path):
    model, _ = cartpole
    model.policy.q_net.q_net = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(UnsupportedLayerError, match=r"q_net\.1 is a LayerNorm"):
        load_dqn(model)
    path = tmp_path / "layernorm.qnet.pt"
    torch.save(model.policy.q_net.state_dict(), path)
    with pytest.raises(UnsupportedLayerError, match=r"q_net\.1\.weight has a 1-D weight.*LayerNorm"):
        load_dqn(path)


def test_dueling_head_is_named(tmp_path):
    state = {
        "q_net.value.0.weight": torch.zeros(1, 4), "q_net.value.0.bias": torch.zeros(1),
        "q_net.advantage.0.weight": torch.zeros(2, 4), "q_net.advantage.0.bias": torch.zeros(2),
    }
    path = tmp_path / "dueling.qnet.pt"
    torch.save(state, path)
    with pytest.raises(UnsupportedLayerError, match=r"q_net\.advantage\.0\.bias is not a layer.*dueling"):
        load_dqn(path)


def test_custom_features_extractor_is_named(save_sb3):
    kwargs = {"net_arch": [8], "features_extractor_class": TinyExtractor}
    model, path = save_sb3(DQN, "custom", buffer_size=1, policy_kwargs=kwargs)
    not_a_cnn = r"is a custom extractor that is not a plain CNN .*features_extractor\.body\.0.*network="
    with pytest.raises(UnsupportedLayerError, match=r"custom\.zip: features_extractor \(TinyExtractor\) " + not_a_cnn):
        load_dqn(path)
    with pytest.raises(UnsupportedLayerError, match=r"layer features_extractor\.body\.1 is a Tanh"):
        load_dqn(model)  # in memory its code is at hand: traced, and its Tanh named
    weights = path.with_name("custom.qnet.pt")
    torch.save(model.policy.q_net.state_dict(), weights)
    with pytest.raises(UnsupportedLayerError, match=r"custom\.qnet\.pt: features_extractor " + not_a_cnn):
        load_dqn(weights)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(cartpole, tmp_path, bad):
    _, path = cartpole
    state = _policy_state(path)
    state["q_net.q_net.2.weight"][1, 3] = bad
    broken = _rewrite_zip(path, tmp_path / "nonfinite.zip", policy_pth=_tensor_bytes(state))
    with pytest.raises(CheckpointError, match=r"nonfinite\.zip: weight q_net\.2\.weight holds NaN or inf"):
        load_dqn(broken)


@pytest.mark.parametrize(
    ("key", "tensor", "message"),
    [("q_net.q_net.2.weight", torch.zeros(2, 15), r"the layer shapes do not match"),
     ("q_net.q_net.0.bias", torch.zeros(17), r"q_net\.0\.bias has shape \(17,\)")],
)
def test_weight_shapes_that_do_not_fit(cartpole, tmp_path, key, tensor, message):
    _, path = cartpole
    state = _policy_state(path)
    state[key] = tensor
    broken = _rewrite_zip(path, tmp_path / "shapes.zip", policy_pth=_tensor_bytes(state))
    with pytest.raises(CheckpointError, match=rf"shapes\.zip: {message}"):
        load_dqn(broken)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("observation_space", {"shape": [5], "dtype": "float32"}, "observation shape"),
     ("action_space", {"n": "3"}, "2 outputs but the action space has 3 actions")],
)
def test_recorded_spaces_that_do_not_match_the_weights(cartpole, tmp_path, field, value, message):
    _, path = cartpole
    data = json.loads(zipfile.ZipFile(path).read("data"))
    data[field] = value
    broken = _rewrite_zip(path, tmp_path / "spaces.zip", data=json.dumps(data).encode())
    with pytest.raises(CheckpointError, match=rf"spaces\.zip: .*{message}"):
        load_dqn(broken)


def test_qrdqn_output_not_a_multiple_of_quantiles(save_sb3, tmp_path):
    _, path = save_sb3(QRDQN, "qr", buffer_size=1, policy_kwargs={"net_arch": [8], "n_quantiles": 3})
    data = json.loads(zipfile.ZipFile(path).read("data"))
    data["policy_kwargs"]["n_quantiles"] = 4
    broken = _rewrite_zip(path, tmp_path / "quantiles.zip", data=json.dumps(data).encode())
    with pytest.raises(CheckpointError, match=r"6 outputs, not a multiple of n_quantiles=4"):
        load_dqn(broken)


@pytest.mark.parametrize("source", ["no/such/file.zip", "s3://bucket/model.zip"])
def test_source_that_is_neither_file_nor_hub_id(source):
    with pytest.raises(CheckpointError, match=rf"{source}: neither an existing file nor a hub id"):
        load_dqn(source)


def test_object_that_is_neither_an_sb3_dqn_nor_a_module():
    with pytest.raises(CheckpointError, match=r"<in-memory dict>: not an SB3 DQN/QR-DQN model or policy, nor an nn\.Module"):
        load_dqn({"q": 1})


@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (bytes(range(256)) * 3, "not a PyTorch tensor file"),
])
def test_unreadable_pt_files_name_the_reason_without_torch_advice(tmp_path, content, reason):
    path = tmp_path / "broken.qnet.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_dqn(path)
    assert str(info.value).startswith(str(path)) and "weights_only" not in str(info.value)


def _edited_data(path: Path, **fields) -> bytes:
    """The zip's `data` JSON with `fields` set (`a__b` sets data["a"]["b"])."""
    data = json.loads(zipfile.ZipFile(path).read("data"))
    for name, value in fields.items():
        *outer, last = name.split("__")
        node = data
        for key in outer:
            node = node[key]
        node[last] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize("fields, message", [
    ({"policy_kwargs": [1, 2]}, "policy_kwargs is a list, not a JSON object"),
    ({"action_space": "Discrete(2)"}, "action_space is a str, not a JSON object"),
    ({"action_space__n": "two"}, "action_space.n is 'two', not a positive whole number"),
    ({"action_space__n": 0}, "action_space.n is 0"),
    ({"observation_space___shape": "4"}, "shape '4' is not a shape"),
    ({"observation_space___shape": [4, -1]}, "observation_space shape is -1"),
])
def test_crafted_sb3_data_fields_are_named(cartpole, tmp_path, fields, message):
    _, path = cartpole
    crafted = _rewrite_zip(path, tmp_path / "crafted.zip", data=_edited_data(path, **fields))
    with pytest.raises(CheckpointError, match=message):
        load_dqn(crafted)


def test_a_non_utf8_version_file_still_loads(cartpole, tmp_path):
    _, path = cartpole
    crafted = _rewrite_zip(path, tmp_path / "crafted.zip", _stable_baselines3_version=b"\xff\xfe2.")
    assert load_dqn(crafted).n_actions == 2


@pytest.mark.parametrize("bad, message", [
    (lambda x: x[:0], "the observation batch is empty"),
    (lambda x: x.float().masked_fill(torch.zeros_like(x, dtype=torch.bool).index_fill_(0, torch.tensor([1]), True),
                                     float("nan")), "NaN or infinite"),
    (lambda x: x.float() / 255, "divided by 255"),
    (lambda x: x.bool(), "must be numbers"),
    (lambda x: "frames", "numeric array or tensor, got str"),
])
def test_bad_observations_are_refused_by_the_dqn_and_its_snn(atari_observations, bad, message):
    from dqn2snn_plugin.conversion import convert
    from dqn2snn_plugin.errors import ObservationError
    from conftest import atari_checkpoint

    ckpt = atari_checkpoint()
    snn = convert(ckpt, atari_observations, T=4)
    obs = bad(torch.as_tensor(atari_observations))
    for act in (ckpt.act, snn.act):
        with pytest.raises(ObservationError, match=message):
            act(obs)
    assert ckpt.act(torch.as_tensor(atari_observations).float()).shape == (6,)  # raw pixels as floats are fine


def test_describe_says_when_the_env_is_unknown(cartpole, tmp_path):
    from dqn2snn_plugin.checkpoint import describe

    _, path = cartpole
    renamed = tmp_path / "my-agent.zip"
    renamed.write_bytes(path.read_bytes())
    assert "env id:        could not tell from the file name (pass --env-id)" in describe(load_dqn(renamed))


def test_a_saved_replay_buffer_size_is_never_allocated(cartpole, tmp_path, monkeypatch):
    """SB3's `DQN.load` builds the replay buffer the zip's `buffer_size` declares (here 10**12
    transitions, terabytes); the loader reads only the JSON text and policy.pth, so nothing is built."""
    from stable_baselines3.common import buffers
    from stable_baselines3.common.base_class import BaseAlgorithm

    _, path = cartpole
    data = json.loads(zipfile.ZipFile(path).read("data"))
    assert data["buffer_size"] == 1
    data["buffer_size"] = 10**12
    huge = _rewrite_zip(path, tmp_path / "huge-buffer.zip", data=json.dumps(data).encode())

    def refuse(*args, **kwargs):
        raise AssertionError("a replay buffer was allocated / SB3's loader was called")

    monkeypatch.setattr(buffers.ReplayBuffer, "__init__", refuse)
    monkeypatch.setattr(BaseAlgorithm, "load", classmethod(refuse))
    with pytest.raises(AssertionError, match="replay buffer"):  # the trap is live
        DQN("MlpPolicy", "CartPole-v1", buffer_size=1, device="cpu")
    ckpt = load_dqn(huge)
    assert (ckpt.n_actions, ckpt.observation_shape) == (2, (4,))


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: none here, so loading onto a GPU is not tested on this machine")
def test_loading_onto_a_gpu_gives_the_cpu_q_values(cartpole):
    _, path = cartpole
    cpu, gpu = load_dqn(path), load_dqn(path, device="cuda")
    assert all(p.device.type == "cuda" for p in gpu.q_network.parameters())
    obs = torch.randn(8, 4)
    torch.testing.assert_close(gpu.q_values(obs).cpu(), cpu.q_values(obs), rtol=1e-5, atol=1e-6)


def test_a_gpu_asked_for_without_one_is_refused_before_reading(cartpole, monkeypatch):
    _, path = cartpole
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' was asked for but no CUDA GPU is available: use device='cpu'"):
        load_dqn(path, device="cuda")
    with pytest.raises(ConfigError, match="device must be 'cpu' or 'cuda', got 'gpu0'"):
        load_dqn(path, device="gpu0")


@pytest.mark.parametrize("bad, dtype", [(float("nan"), torch.float32), (1e300, torch.float64)], ids=["nan", "overflow"])
def test_modules_whose_weights_are_not_finite_float32_are_refused(bad, dtype):
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).to(dtype)
    with torch.no_grad():
        net[2].weight[1, 3] = bad  # 1e300 is finite in float64 and infinite once made float32
    with pytest.raises(CheckpointError, match=r"^<in-memory Sequential>: 2\.weight holds NaN or infinite values$"):
        load_dqn(net)
