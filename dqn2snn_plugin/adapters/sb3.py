"""Read Stable-Baselines3 / sb3-contrib DQN and QR-DQN checkpoints without running any of their code.

An SB3 zip holds `data` (JSON whose `:serialized:` fields are pickles: we never unpickle them, we only
read the plain-text fields SB3 writes next to them), `policy.pth` (a state dict, loaded with
`weights_only=True`) and `_stable_baselines3_version`. SB3's own `DQN.load` is never called, so no
replay buffer is allocated and 2021 RL-Zoo zips load without the old `gym` package.
Each reader returns an `SB3Parts`; `sb3_network.build_q_network` turns the weights into an `nn.Sequential`.
Every zip entry is read through `archive.read_entry`, which bounds it before reading (zip bombs).
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.adapters.archive import TENSOR_LIMIT, load_weights_only, read_entry
from dqn2snn_plugin.adapters.sb3_network import SUPPORTED_EXTRACTORS, build_q_network
from dqn2snn_plugin.adapters.torch_graph import trace_q_network
from dqn2snn_plugin.errors import CheckpointError, EnvIdError, UnsupportedLayerError

# policy class module `stable_baselines3.<x>.policies` / `sb3_contrib.<x>.policies` -> algorithm name
_ALGORITHMS = {"dqn": "DQN", "qrdqn": "QRDQN", "ppo_recurrent": "RecurrentPPO", "ppo_mask": "MaskablePPO"}
# state-dict keys that only other algorithms' policies have
_NON_DQN_KEYS = {
    "action_net": "an actor-critic policy (PPO/A2C)",
    "value_net": "an actor-critic policy (PPO/A2C)",
    "mlp_extractor": "an actor-critic policy (PPO/A2C)",
    "actor": "an actor-critic policy (SAC/TD3/DDPG)",
    "critic": "an actor-critic policy (SAC/TD3/DDPG)",
}
# class names SB3 gives DQN policies -> the names users pass ("MlpPolicy" is an alias of DQNPolicy)
_POLICY_NAMES = {"DQNPolicy": "MlpPolicy", "QRDQNPolicy": "MlpPolicy"}
_SB3_CONTAINERS = {"QNetwork", "QuantileNetwork", *SUPPORTED_EXTRACTORS}
_PLAIN_LAYERS = (nn.Sequential, nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten)
_ALGORITHM_PREFIX = re.compile(r"^(?:dqn|qrdqn)-")
IMAGE_SCALE = 1 / 255


@dataclass(frozen=True)
class SB3Parts:
    """What a checkpoint says about its Q-network; `None` where it does not say.

    `input_scale` is the factor the source records raw observations are multiplied by before the
    network (None: not recorded; then `default_scale` is assumed, for the reason `scale_reason` gives);
    `scale_folded` says whether `q_network` already holds the recorded scale. `assumptions` name what else was inferred.
    """

    q_network: nn.Sequential
    algorithm: str
    policy: str | None
    observation_shape: tuple[int, ...] | None
    n_actions: int | None
    sb3_version: str | None
    env_id: str | None
    source: str
    input_scale: float | None = None
    scale_reason: str = ""
    default_scale: float = 1.0
    scale_folded: bool = False
    assumptions: tuple[str, ...] = ()


def read_zip(path: Path) -> SB3Parts:
    """Read an SB3 `.zip` (1.x or 2.x, DQN or QR-DQN) from its JSON text fields and `policy.pth`."""
    where = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "policy.pth" not in names:
                raise CheckpointError(f"{where}: the zip has no policy.pth, so it is not an SB3 checkpoint")
            data = _read_json(read_entry(archive, "data", where), where) if "data" in names else {}
            version_file = "_stable_baselines3_version"
            version = (_version_text(read_entry(archive, version_file, where))
                       if version_file in names else None)
            state = load_state_dict(read_entry(archive, "policy.pth", where, TENSOR_LIMIT), f"{where} (policy.pth)")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CheckpointError(f"{where}: not a readable zip file ({exc})") from None
    algorithm = _algorithm_from_data(data)
    if algorithm not in (None, "DQN", "QRDQN"):
        raise CheckpointError(f"{where}: this is a {algorithm} checkpoint; only DQN and QR-DQN can be converted")
    kwargs = _mapping(data, "policy_kwargs", where)
    _check_class_text(kwargs.get("activation_fn"), ("ReLU",), "activation_fn", where)
    algorithm_from_keys, net_state = _q_network_state(state, where)
    space = _mapping(data, "observation_space", where)
    shape = _shape(space.get("_shape", space.get("shape")), where)
    image = _is_image_space(shape, space.get("dtype"), _numbers(space.get("low")), _numbers(space.get("high")))
    normalize = kwargs.get("normalize_images", True)
    n_actions = _mapping(data, "action_space", where).get("n")
    parts = _build_parts(
        net_state,
        algorithm=algorithm or algorithm_from_keys,
        policy=_policy_from_data(data),
        observation_shape=shape,
        extractor_class=_class_name(kwargs.get("features_extractor_class")),
        n_actions=_whole(n_actions, "action_space.n", where) if n_actions is not None else None,
        n_quantiles=kwargs.get("n_quantiles"),
        sb3_version=version,
        env_id=registered_env_id(path.name.removesuffix(".zip")),
        source=where,
    )
    if shape is None:  # an old zip without its space: SB3's default for a CNN is uint8 images / 255
        return parts
    if image and normalize:
        return replace(parts, input_scale=IMAGE_SCALE, scale_reason="SB3 divides a uint8 0..255 image space by 255; "
                       "normalize_images is on, as the zip records")
    why = "normalize_images is off" if image else "the recorded observation space is not a uint8 0..255 image"
    return replace(parts, input_scale=1.0, scale_reason=f"SB3 feeds observations unscaled ({why})")


def read_state_dict(state: Mapping[str, torch.Tensor], *, where: str, stem: str, env_id: str | None = None,
                    n_quantiles: int | None = None) -> SB3Parts:
    """Read the tensors of a `.pt` / `.pth` state dict of an SB3 `QNetwork` (or a whole DQN policy).

    `stem` is the file name without its suffix (for the env id). Nothing records the observation or
    action space here: a CNN is taken as SB3's NatureCNN on uint8 images, so `/255` is the default
    scale (stated as assumed), and the input shape is inferred from the weights. A QR-DQN
    `QuantileNetwork` has n_quantiles x n_actions outputs, which the weights alone cannot split: the
    action count comes from the environment (`env_id`, else the file name), or `n_quantiles` is given;
    otherwise the file is refused (CheckpointError saying what to pass).
    """
    algorithm, net_state = _q_network_state(state, where)
    env_id = env_id or registered_env_id(stem.removesuffix(".qnet"))
    n_actions, outputs = None, _head_outputs(net_state, "quantile_net")
    if algorithm == "QRDQN" and n_quantiles is None and outputs:
        n_actions = env_action_count(env_id) if env_id else None
        if n_actions is None:
            raise CheckpointError(
                f"{where}: a QR-DQN state dict does not say how its {outputs} outputs split into quantiles x "
                "actions: name its environment (env_id=..., on the command line --env-id <Env>) or pass "
                "n_quantiles=... to load_dqn"
            )
    return _build_parts(
        net_state,
        algorithm=algorithm,
        policy=None,
        observation_shape=None,
        extractor_class=None,
        n_actions=n_actions,
        n_quantiles=n_quantiles,
        sb3_version=None,
        env_id=env_id,
        source=where,
    )


def env_action_count(env_id: str) -> int | None:
    """The action count of a known environment with a discrete action space; None when it cannot be
    made here (unregistered id, missing optional dependency, continuous actions)."""
    if env_id.endswith("NoFrameskip-v4"):
        from dqn2snn_plugin.envs.atari import action_count  # imported here: it loads ale-py

        try:
            return action_count(env_id)
        except EnvIdError:
            return None
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except Exception:  # gymnasium raises many types: unknown id, missing extra, bad kwargs
        return None
    n = getattr(env.action_space, "n", None)
    env.close()
    return None if n is None else int(n)


def _head_outputs(state: Mapping[str, torch.Tensor], head: str) -> int:
    """Outputs of the last Linear layer of `head` (weights keyed `<head>.<index>.weight`); 0 if it has none."""
    weights = {int(k.split(".")[1]): v for k, v in state.items() if re.fullmatch(rf"{head}\.\d+\.weight", k)}
    return int(weights[max(weights)].shape[0]) if weights else 0


def read_model(model: Any) -> SB3Parts:
    """Read an in-memory SB3 `DQN` / sb3-contrib `QRDQN` model, or its `policy`.

    A DQN whose features extractor is not one of SB3's own is traced like any module (its code is
    at hand here, so nothing about it needs assuming); the others are rebuilt from their weights."""
    policy = getattr(model, "policy", model)
    net = getattr(policy, "q_net", getattr(policy, "quantile_net", None))
    where = f"<in-memory {type(model).__name__}>"
    if not isinstance(net, nn.Module) or type(net).__name__ not in ("QNetwork", "QuantileNetwork"):
        raise CheckpointError(f"{where}: not an SB3 DQN/QR-DQN model or policy (it has no q_net or quantile_net)")
    import stable_baselines3  # only reached when SB3 objects exist, so the import is free

    space = policy.observation_space
    shape = tuple(space.shape) if space.shape is not None else None
    policy_name = _POLICY_NAMES.get(type(policy).__name__, type(policy).__name__)
    image = _is_image_space(shape, getattr(space, "dtype", None), getattr(space, "low", None), getattr(space, "high", None))
    scaled = bool(policy.normalize_images) and image
    scaling = {"input_scale": IMAGE_SCALE if scaled else 1.0,
               "scale_reason": "SB3 divides this model's uint8 0..255 image space by 255" if scaled
               else "SB3 feeds this model's observations unscaled"}
    if type(net).__name__ == "QNetwork" and type(net.features_extractor).__name__ not in SUPPORTED_EXTRACTORS:
        traced = trace_q_network(_ExtractorAndHead(net), shape, where)
        return SB3Parts(
            q_network=traced.network, algorithm="DQN", policy=policy_name, observation_shape=shape,
            n_actions=int(policy.action_space.n), sb3_version=stable_baselines3.__version__, env_id=None,
            source=where, **scaling,
        )
    for name, module in net.named_modules():
        sb3_container = type(module).__name__ in _SB3_CONTAINERS and type(module).__module__.startswith(
            ("stable_baselines3.", "sb3_contrib.")
        )
        if not sb3_container and type(module) not in _PLAIN_LAYERS:
            raise UnsupportedLayerError(
                f"{where}: layer {name or type(net).__name__} is a {type(module).__name__}, "
                "which the conversion cannot handle"
            )
    parts = _build_parts(
        {k: v.detach().cpu() for k, v in net.state_dict().items()},
        algorithm="QRDQN" if hasattr(net, "n_quantiles") else "DQN",
        policy=policy_name,
        observation_shape=shape,
        extractor_class=type(net.features_extractor).__name__,
        n_actions=int(policy.action_space.n),
        n_quantiles=getattr(net, "n_quantiles", None),
        sb3_version=stable_baselines3.__version__,
        env_id=None,
        source=where,
    )
    return replace(parts, **scaling)


class _ExtractorAndHead(nn.Module):
    """An SB3 `QNetwork` without its observation preprocessing (SB3's asserts stop torch.fx; the
    preprocessing, a `/255` or nothing, is what the recorded space says)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features_extractor, self.q_net = net.features_extractor, net.q_net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_net(self.features_extractor(x))


def _build_parts(
    state: dict[str, torch.Tensor], *, algorithm: str, observation_shape: tuple[int, ...] | None,
    extractor_class: str | None, n_quantiles: int | None, **fields: Any
) -> SB3Parts:
    """Build the network and bundle it with `fields`.

    Until a reader says otherwise, a CNN is taken to see uint8 images that SB3 divides by 255 (its
    default), an MLP raw values. An unrecorded QR-DQN quantile count is the outputs / the known action
    count, else sb3-contrib's default 200 (what an SB3 zip that records neither means). A missing
    policy name is inferred likewise.
    """
    head = "quantile_net" if algorithm == "QRDQN" else "q_net"
    has_cnn = any(k.startswith("features_extractor.") for k in state)
    if algorithm == "QRDQN" and n_quantiles is None:
        n_quantiles = _quantiles_for(_head_outputs(state, head), fields["n_actions"], fields["source"])
    net, assumptions = build_q_network(
        state,
        head=head,
        n_quantiles=n_quantiles if algorithm == "QRDQN" else None,
        observation_shape=observation_shape,
        extractor_class=extractor_class,
        where=fields["source"],
    )
    policy = fields.pop("policy") or ("CnnPolicy" if has_cnn else "MlpPolicy")
    return SB3Parts(
        q_network=net, algorithm=algorithm, policy=policy, observation_shape=observation_shape, **fields,
        default_scale=IMAGE_SCALE if has_cnn else 1.0, assumptions=assumptions,
        scale_reason=("SB3's default for a CNN: uint8 images divided by 255; the file records no observation space"
                      if has_cnn else "the file records no observation space"),
    )


def _quantiles_for(outputs: int, n_actions: int | None, where: str) -> int:
    """Quantiles per action of a QR-DQN head with `outputs` outputs and `n_actions` actions (None: 200)."""
    if n_actions is None:
        return 200
    if outputs % n_actions:
        raise CheckpointError(f"{where}: the QR-DQN head has {outputs} outputs, not a multiple of the "
                              f"{n_actions} actions of its environment: pass n_quantiles")
    return outputs // n_actions


def _q_network_state(state: Mapping[str, torch.Tensor], where: str) -> tuple[str, dict[str, torch.Tensor]]:
    """Pick the online Q-network's weights out of a policy or network state dict; name other algorithms."""
    for key in state:
        kind = _NON_DQN_KEYS.get(key.split(".")[0])
        if kind:
            raise CheckpointError(f"{where}: the weights belong to {kind} (key {key}), not to a DQN")
    for head, algorithm in (("q_net", "DQN"), ("quantile_net", "QRDQN")):
        nested = {k[len(head) + 1 :]: v for k, v in state.items() if k.startswith(head + ".")}
        if any(k.startswith((f"{head}.", "features_extractor.")) for k in nested):  # a whole policy
            return algorithm, nested
        if nested:  # the network itself
            return algorithm, dict(state)
    raise CheckpointError(f"{where}: its keys ({', '.join(list(state)[:4])} ...) are neither an SB3 Q-network's "
                          "nor a layout known here: pass the architecture with network=...")


def load_state_dict(file: bytes | Path, where: str) -> dict[str, torch.Tensor]:
    """A file's tensors as a state dict (a bare one, or CleanRL / training-loop dicts that hold one under
    `model_weights` / `state_dict`), read with `weights_only=True`; CheckpointError if it holds none."""
    state = load_weights_only(file, where)
    if isinstance(state, Mapping):
        state = next((state[k] for k in ("state_dict", "model_weights") if isinstance(state.get(k), Mapping)), state)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: does not hold a state dict (a mapping of names to tensors)")
    return {str(k): v for k, v in state.items()}


def _read_json(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: its `data` entry is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: its `data` entry is not a JSON object")
    return data


def _mapping(data: Mapping[str, Any], field: str, where: str) -> Mapping[str, Any]:
    """`data[field]` as a mapping ({} when absent); CheckpointError when it is something else."""
    value = data.get(field) or {}
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{where}: its `data` field {field} is a {type(value).__name__}, not a JSON object")
    return value


def _whole(value: Any, field: str, where: str) -> int:
    """A positive whole number as SB3 records it (an int, or its text such as "4"); CheckpointError otherwise."""
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise CheckpointError(f"{where}: its `data` field {field} is {value!r}, not a positive whole number")
    return number


def _shape(value: Any, where: str) -> tuple[int, ...] | None:
    """A recorded observation shape as a tuple of positive ints; CheckpointError when it is not one."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise CheckpointError(f"{where}: its observation_space shape {value!r} is not a shape (positive whole numbers)")
    return tuple(_whole(d, "observation_space shape", where) for d in value)


def _version_text(raw: bytes) -> str:
    """The recorded SB3 version as printable text: bytes that are not UTF-8, or control characters, are
    shown as escapes (`\\xff`), never as replacement characters that hide what the file holds."""
    text = raw.decode("utf-8", "backslashreplace").strip()
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _algorithm_from_data(data: Mapping[str, Any]) -> str | None:
    """The algorithm named by the policy class's module, e.g. `stable_baselines3.ppo.policies` -> PPO."""
    policy_class = data.get("policy_class")
    module = str(policy_class.get("__module__", "")) if isinstance(policy_class, Mapping) else ""
    parts = module.split(".")
    if len(parts) != 3 or parts[0] not in ("stable_baselines3", "sb3_contrib"):
        return None
    if parts[1] == "common":  # ActorCriticPolicy is shared by PPO and A2C; only PPO has epochs
        return "PPO" if "n_epochs" in data else "A2C"
    return _ALGORITHMS.get(parts[1], parts[1].upper())


def _policy_from_data(data: Mapping[str, Any]) -> str | None:
    """The policy class name from the text of its `__init__` entry, e.g. `<function CnnPolicy.__init__ ...>`."""
    policy_class = data.get("policy_class")
    text = str(policy_class.get("__init__", "")) if isinstance(policy_class, Mapping) else ""
    match = re.match(r"<function (\w+)\.__init__", text)
    return _POLICY_NAMES.get(match[1], match[1]) if match else None


def _check_class_text(text: Any, allowed: tuple[str, ...], field: str, where: str) -> None:
    """Refuse a recorded class (`"<class 'torch.nn.modules.activation.Tanh'>"`) outside `allowed`."""
    match = re.search(r"<class '([\w.]+)'>", str(text)) if text is not None else None
    if match and match[1].rsplit(".", 1)[-1] not in allowed:
        raise UnsupportedLayerError(f"{where}: {field} is {match[1]}; only {', '.join(allowed)} can be converted")


def _class_name(text: Any) -> str | None:
    """The class name in a recorded class text (`"<class '__main__.MinAtarCNN'>"` -> MinAtarCNN)."""
    match = re.search(r"<class '([\w.]+)'>", str(text)) if text is not None else None
    return match[1].rsplit(".", 1)[-1] if match else None


def _numbers(text: Any) -> list[float] | None:
    """Numbers in a numpy repr such as `"[[[0 0 0 ... 0 0 0] ..."` (SB3's plain-text `low` / `high`)."""
    if text is None:
        return None
    return [float(x) for x in re.findall(r"-?(?:\d+\.?\d*(?:e[+-]?\d+)?|inf)", str(text))]


def _is_image_space(shape: tuple[int, ...] | None, dtype: Any, low: Any, high: Any) -> bool:
    """SB3's `is_image_space`: a 3-D uint8 Box with bounds 0 and 255 (the inputs it divides by 255)."""
    if shape is None or len(shape) != 3 or str(dtype) != "uint8" or low is None or high is None:
        return False
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return bool(low.size and high.size and (low == 0).all() and (high == 255).all())


def registered_env_id(stem: str) -> str | None:
    """The registered env id a file name means, or None: `dqn-BreakoutNoFrameskip-v4` -> BreakoutNoFrameskip-v4,
    `dqn-MinAtar-Breakout-v1` -> MinAtar/Breakout-v1 (the RL-Zoo writes '/' as '-'), `CartPole-v1.qnet`...
    A name that is no registered env (`synthetic-PongNoFrameskip-v4`) gives None. Atari and MinAtar ids are
    registered by importing ale-py / minatar, done here only for names that could be theirs, if installed."""
    name = _ALGORITHM_PREFIX.sub("", stem)
    namespaced = [name.replace("-", "/", 1)] if name.count("-") > 1 else []
    for candidate in (name, *namespaced):
        if _is_registered(candidate):
            return candidate
    return None


def _is_registered(env_id: str) -> bool:
    """Whether gymnasium registers `env_id` (or the id it was renamed to, e.g. LunarLander-v2 -> v3)."""
    import gymnasium as gym

    from dqn2snn_plugin.envs.classic import gymnasium_id

    if gymnasium_id(env_id) in gym.registry:
        return True
    if env_id.startswith("ALE/") or "NoFrameskip" in env_id or env_id.endswith(("Deterministic-v4", "-v5")):
        try:
            import ale_py
        except ImportError:
            return False
        gym.register_envs(ale_py)
    elif env_id.startswith("MinAtar/"):
        try:
            import minatar.gym
        except ImportError:
            return False
        if not any(k.startswith("MinAtar/") for k in gym.registry):
            minatar.gym.register_envs()
    return env_id in gym.registry
