"""Gymnasium's vector-observation tasks (CartPole, Acrobot, MountainCar, LunarLander, ...) for `play`.

RL-Zoo's classic-control DQNs are MLPs on float observations; their SNN gets the observation as an
analog input current at every step, negative values included. `make_env` builds gymnasium's own
synchronous vector env with the same-step autoreset `atari.play` expects, so calibration, agreement
and `evaluate` run on these tasks exactly as on Atari (raw episode return, epsilon-greedy, env i
seeded with seed + i). Only the env's own time limit and our `max_steps` end an episode early.

CartPole, Acrobot and MountainCar come with gymnasium; LunarLander needs Box2D
(`pip install swig` then `pip install "gymnasium[box2d]"`), which builds from source.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import gymnasium as gym

from dqn2snn_plugin.errors import EnvIdError

# ids RL-Zoo trained on that gymnasium now registers under a newer version (same observations and actions)
RENAMED = {"LunarLander-v2": "LunarLander-v3"}


def gymnasium_id(env_id: str) -> str:
    """The id gymnasium registers today for `env_id` (RL-Zoo's LunarLander-v2 -> LunarLander-v3)."""
    return RENAMED.get(env_id, env_id)


def is_classic(env_id: str) -> bool:
    """Whether gymnasium registers `env_id` (after `gymnasium_id`) with a non-Atari entry point."""
    spec = gym.envs.registry.get(gymnasium_id(env_id))
    return spec is not None and "ale_py" not in str(spec.entry_point)


def make_env(env_id: str, n_envs: int, seed: int | None = None) -> gym.vector.SyncVectorEnv:
    """`n_envs` copies of `env_id` in one synchronous vector env with same-step autoreset.

    EnvIdError when gymnasium does not know the id or the env needs a package that is not installed
    (the message says which, e.g. Box2D for LunarLander)."""
    try:
        with warnings.catch_warnings(record=True) as said:  # shown only if the env is made: an error is one line
            warnings.simplefilter("always")
            env = gym.make_vec(gymnasium_id(env_id), num_envs=n_envs, vectorization_mode="sync",
                               vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    except gym.error.DependencyNotInstalled as exc:
        raise EnvIdError(f"{env_id} cannot be played here: {exc}") from None
    except ImportError as exc:  # an entry point needing what gymnasium leaves out: MuJoCo v2/v3 ids
        # (mujoco-py), GymV26Environment-v0 (shimmy), phys2d/* and tabular/* (jax)
        missing = f"it needs the package {exc.name!r}, which is not installed" if exc.name else str(exc)
        raise EnvIdError(f"{env_id} cannot be played here: {missing}") from None
    except gym.error.Error as exc:
        raise EnvIdError(f"gymnasium cannot make {env_id!r}: {exc}") from None
    for warning in said:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not isinstance(env.single_action_space, gym.spaces.Discrete):
        env.close()
        raise EnvIdError(f"{env_id} has {env.single_action_space} actions: a DQN needs a discrete action space")
    if seed is not None:
        env.reset(seed=seed)
    return env


@lru_cache(maxsize=None)
def spaces(env_id: str) -> tuple[gym.Space, int]:
    """The observation space of one env of `env_id` and its number of discrete actions (EnvIdError as
    in `make_env`); one env is made, once per id (cheap for these tasks)."""
    env = make_env(env_id, 1)
    try:
        return env.single_observation_space, int(env.single_action_space.n)
    finally:
        env.close()


def action_count(env_id: str) -> int:
    """Number of discrete actions of `env_id` (EnvIdError as in `make_env`)."""
    return spaces(env_id)[1]


def check_observation_shape(env_id: str, observation_shape: tuple[int, ...]) -> None:
    """EnvIdError unless `env_id` gives arrays (a Box space) of `observation_shape`: what `play` hands the
    network as it is (a Tuple or Discrete observation, Blackjack's or FrozenLake's, is no array)."""
    space = spaces(env_id)[0]
    if not isinstance(space, gym.spaces.Box):
        raise EnvIdError(f"{env_id} gives {space} observations, not arrays of numbers: a DQN network here reads "
                         "arrays (a Box space); it was trained on another task, or through a wrapper (pass "
                         "env_factory with that wrapper)")
    if tuple(space.shape) != tuple(observation_shape):
        raise EnvIdError(f"the checkpoint reads observations of shape {tuple(observation_shape)} but {env_id} gives "
                         f"{tuple(space.shape)}: it was trained on another task")
