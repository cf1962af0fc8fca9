"""MinAtar games (`MinAtar/<Game>-v1`): 10x10 binary planes, one per object kind, for `play`.

MinAtar (Young & Tian 2019, package `minatar`) registers its games with gymnasium through
`minatar.gym.register_envs()`; the package is imported only when a MinAtar id is played, and an
EnvIdError says how to install it when it is missing. Its observations are bool planes `(10, 10, C)`
(height, width, channels). SB3 users usually hand them to a CNN channel-first, `(C, 10, 10)`; the
checkpoint's `observation_shape` says which, and `make_env(..., observation_shape=...)` delivers that
layout (gymnasium's `TransformObservation` on each env), keeping the bool dtype: the network reads
them as 0/1 (see `dqn2snn_plugin.observations.observation_batch`).

The `MinAtarProtocol` holds MinAtar's own settings (sticky-action probability, difficulty ramping),
package defaults unless overridden.
"""

from __future__ import annotations

from functools import lru_cache

import gymnasium as gym
import numpy as np

from dqn2snn_plugin.envs.protocol import MinAtarProtocol, check_protocol
from dqn2snn_plugin.errors import ConfigError, EnvIdError, ObservationError

PREFIX = "MinAtar/"


def is_minatar(env_id: str) -> bool:
    """Whether `env_id` names a MinAtar game (whether or not the package is installed)."""
    return env_id.startswith(PREFIX)


def _register() -> None:
    """Register MinAtar's ids with gymnasium (EnvIdError naming the package when it is missing)."""
    try:
        from minatar import gym as minatar_gym
    except ImportError:
        raise EnvIdError("MinAtar games need the minatar package: pip install minatar") from None
    if not any(is_minatar(env_id) for env_id in gym.envs.registry):
        minatar_gym.register_envs()


def _spec(env_id: str) -> gym.envs.registration.EnvSpec:
    _register()
    if env_id not in gym.envs.registry:
        games = sorted({name.split("/")[1].rsplit("-", 1)[0] for name in gym.envs.registry if is_minatar(name)})
        raise EnvIdError(f"unknown MinAtar id {env_id!r}: expected MinAtar/<Game>-v1 with <Game> one of {', '.join(games)}")
    return gym.envs.registry[env_id]


@lru_cache(maxsize=None)
def _native_space(env_id: str) -> tuple[tuple[int, ...], int]:
    """MinAtar's own observation shape `(10, 10, C)` and action count for `env_id`."""
    env = gym.make(_spec(env_id).id)
    try:
        return tuple(env.observation_space.shape), int(env.action_space.n)
    finally:
        env.close()


def action_count(env_id: str) -> int:
    """Number of actions of the game (the v1 ids use the game's minimal action set)."""
    return _native_space(env_id)[1]


def channels_first(env_id: str, observation_shape: tuple[int, ...] | None) -> bool:
    """Whether a network expecting `observation_shape` reads the game's planes as (C, 10, 10) rather
    than MinAtar's own (10, 10, C); None means MinAtar's own. A game with 10 planes (Seaquest) has one
    shape for both layouts: it is read channel-first, the layout of SB3 CNNs and of the shipped agents
    (benchmarks/train_minatar.py). ObservationError for any other shape."""
    native = _native_space(env_id)[0]
    if observation_shape is None:
        return False
    if tuple(observation_shape) == (native[2], native[0], native[1]):
        return True  # also where C = 10 gives both layouts one shape (Seaquest): SB3's channel-first wins
    if tuple(observation_shape) == native:
        return False
    raise ObservationError(
        f"the network expects observations of shape {tuple(observation_shape)} but {env_id} gives {native} "
        f"(height, width, channels), or {(native[2], native[0], native[1])} channel-first"
    )


def _to_channels_first(env: gym.Env) -> gym.Env:
    space = env.observation_space
    shape = (space.shape[2], space.shape[0], space.shape[1])
    return gym.wrappers.TransformObservation(
        env, lambda obs: np.ascontiguousarray(obs.transpose(2, 0, 1)),
        gym.spaces.Box(0, 1, shape=shape, dtype=space.dtype),
    )


def make_env(
    env_id: str,
    n_envs: int,
    seed: int | None = None,
    *,
    protocol: MinAtarProtocol | str | None = None,
    observation_shape: tuple[int, ...] | None = None,
) -> gym.vector.SyncVectorEnv:
    """`n_envs` copies of a MinAtar game in one synchronous vector env with same-step autoreset, set
    up as `protocol` says (default: the package's own settings), its observations in the layout of
    `observation_shape` (default MinAtar's (10, 10, C)). Seeded like `classic.make_env`."""
    protocol = check_protocol(protocol, "minatar")
    if n_envs < 1:
        raise ConfigError(f"n_envs must be at least 1, got {n_envs}")
    spec = _spec(env_id)
    wrappers = [_to_channels_first] if channels_first(env_id, observation_shape) else []
    env = gym.make_vec(
        spec.id, num_envs=n_envs, vectorization_mode="sync", wrappers=wrappers,
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        sticky_action_prob=protocol.sticky_actions, difficulty_ramping=protocol.difficulty_ramping,
    )
    if seed is not None:
        env.reset(seed=seed)
    return env
