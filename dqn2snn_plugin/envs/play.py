"""Play whole episodes with any batched greedy policy, epsilon-greedy, on any family of env.

Families: Atari games under an `AtariProtocol` (`envs.atari`), MinAtar games under a
`MinAtarProtocol` (`envs.minatar`), gymnasium's vector-observation tasks (`envs.classic`), or the
user's own vector env from `env_factory(n_envs)`, with whatever wrapper stack they trained with.
Each env is seeded (env i with seed + i) and explores from an RNG seeded with `seed`, so a run is
repeatable. Scores are raw game scores, whole games (all lives) per episode.

A policy that keeps state per env (an SNN carrying its neurons' state between the observations of an
episode: delta coding, or rate coding with carry_state) implements `StatefulPolicy.act_envs`: `play` then
says which env each observation is and where each env's episode starts, the shape of SB3's
`predict(obs, state, episode_start)` with the state kept by the policy, per env index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol as TypingProtocol
from typing import runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from dqn2snn_plugin.envs import atari, classic, minatar
from dqn2snn_plugin.envs.protocol import Protocol, check_protocol
from dqn2snn_plugin.errors import ConfigError, EnvIdError, ObservationError

DEFAULT_MAX_STEPS = 18_000  # gymnasium tasks and user envs: the paper's cap (a protocol carries its own)

Policy = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]
StepHook = Callable[[np.ndarray, np.ndarray, np.ndarray], "bool | None"]
EnvFactory = Callable[[int], gym.vector.VectorEnv]


@runtime_checkable
class StatefulPolicy(TypingProtocol):
    """A policy that keeps state per env of a vector env (see the module doc)."""

    def act_envs(self, obs: np.ndarray, envs: np.ndarray, episode_start: np.ndarray) -> np.ndarray | torch.Tensor:
        """Greedy actions [k] for the observations `obs` [k, ...] of envs `envs` [k] (indices into the vector
        env, fixed for a run); `episode_start` [k] (bool) marks the envs whose observation is the first of a
        new episode (where the state resets). Envs whose games are all played are no longer asked."""


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode: raw game score, agent steps, and whether the step limit cut it short."""

    score: float
    length: int
    truncated: bool


def family(env_id: str) -> str:
    """The family of `env_id`: "minatar", "classic" (a gymnasium task) or else "atari" (whose ids
    `resolve_protocol` checks, refusing unknown ones)."""
    if minatar.is_minatar(env_id):
        return "minatar"
    return "classic" if classic.is_classic(env_id) else "atari"


def resolve_protocol(env_id: str, protocol: Protocol | str | None) -> Protocol | None:
    """The protocol `env_id` is played with (its family's default for None); None for gymnasium tasks,
    which take none. ConfigError for a protocol of another family and EnvIdError for an id the
    protocol cannot play (naming the accepted forms), before anything is built."""
    kind = family(env_id)
    if kind == "classic":
        if protocol is not None:
            raise ConfigError(f"{env_id} is a gymnasium task: it takes no protocol (wrap it yourself and pass "
                              "env_factory to change how it is played)")
        return None
    protocol = check_protocol(protocol, kind)
    if kind == "atari":
        atari.rom_name(env_id, protocol)
    return protocol


def action_count(env_id: str, protocol: Protocol | str | None = None) -> int:
    """Number of discrete actions of `env_id` played under `protocol` (Atari: minimal set unless the
    protocol says full)."""
    protocol = resolve_protocol(env_id, protocol)
    kind = family(env_id)
    if kind == "atari":
        return atari.game_action_count(env_id, protocol)
    return minatar.action_count(env_id) if kind == "minatar" else classic.action_count(env_id)


def check_action_count(env_id: str, n_actions: int, protocol: Protocol | str | None = None) -> None:
    """Raise EnvIdError when a checkpoint with `n_actions` outputs cannot play `env_id`."""
    expected = action_count(env_id, protocol)
    if n_actions != expected:
        raise EnvIdError(
            f"the checkpoint has {n_actions} actions but {env_id} has {expected}: "
            "it was trained on another game (or another action set)"
        )


def check_observation_shape(env_id: str, observation_shape: tuple[int, ...],
                            protocol: Protocol | str | None = None) -> None:
    """Raise EnvIdError (MinAtar: ObservationError) when a network reading observations of
    `observation_shape` cannot play `env_id`: Atari gives `atari.OBSERVATION_SHAPE` under every
    protocol, MinAtar its planes in either layout (`minatar.channels_first`), a gymnasium task the
    shape of its Box space (`classic.check_observation_shape`). Called beside `check_action_count`,
    before any calibration or play."""
    kind = family(env_id)
    resolve_protocol(env_id, protocol)
    if kind == "atari" and tuple(observation_shape) != atari.OBSERVATION_SHAPE:
        raise EnvIdError(f"the checkpoint reads observations of shape {tuple(observation_shape)} but {env_id} gives "
                         f"{atari.OBSERVATION_SHAPE} (4 stacked 84x84 frames): it was trained on another game")
    if kind == "minatar":
        minatar.channels_first(env_id, observation_shape)
    elif kind == "classic":
        classic.check_observation_shape(env_id, observation_shape)


def make_vector_env(
    env_id: str, n_envs: int, *, protocol: Protocol | str | None = None, max_steps: int | None = None,
    observation_shape: tuple[int, ...] | None = None,
) -> gym.vector.VectorEnv:
    """The same-step-autoreset vector env `play` uses for `env_id` under `protocol`.
    `observation_shape` picks MinAtar's plane layout (see `envs.minatar`)."""
    protocol = resolve_protocol(env_id, protocol)
    kind = family(env_id)
    if kind == "atari":
        return atari.make_env(env_id, n_envs, protocol=protocol, max_steps=max_steps)
    if kind == "minatar":
        return minatar.make_env(env_id, n_envs, protocol=protocol, observation_shape=observation_shape)
    return classic.make_env(env_id, n_envs)


def _user_env(env_factory: EnvFactory, n_envs: int) -> gym.vector.VectorEnv:
    """`env_factory(n_envs)`, checked: a vector env of that many envs, discrete actions, same-step autoreset."""
    env = env_factory(n_envs)
    problem = None
    if not isinstance(env, gym.vector.VectorEnv):
        problem = f"returned a {type(env).__name__}, not a gymnasium vector env"
    elif env.num_envs != n_envs:
        problem = f"made {env.num_envs} envs when asked for {n_envs}"
    elif not isinstance(env.single_action_space, gym.spaces.Discrete):
        problem = f"has {env.single_action_space} actions: a DQN needs a discrete action space"
    elif env.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
        problem = (f"uses autoreset mode {env.metadata.get('autoreset_mode')}: make it with "
                   "autoreset_mode=gym.vector.AutoresetMode.SAME_STEP")
    if problem is not None:
        if isinstance(env, gym.vector.VectorEnv):
            env.close()
        raise ConfigError(f"env_factory({n_envs}) {problem}")
    return env


def _as_actions(actions: np.ndarray | torch.Tensor, n: int, n_actions: int) -> np.ndarray:
    """A policy's output as int64 numpy actions `[n]` (ObservationError for a wrong shape or range)."""
    if isinstance(actions, torch.Tensor):
        actions = actions.detach().cpu().numpy()
    actions = np.asarray(actions).astype(np.int64)
    if actions.shape != (n,):
        raise ObservationError(f"the policy returned actions of shape {actions.shape} for {n} observations")
    if len(actions) and not (0 <= actions.min() and actions.max() < n_actions):
        raise ObservationError(f"the policy returned action {int(actions.max())} but the env has {n_actions} actions")
    return actions


def play(
    policy: Policy | StatefulPolicy,
    env_id: str | None,
    episodes: int | None,
    *,
    n_envs: int = 8,
    epsilon: float = 0.05,
    seed: int = 0,
    max_steps: int | None = None,
    on_step: StepHook | None = None,
    progress: bool = False,
    protocol: Protocol | str | None = None,
    env_factory: EnvFactory | None = None,
    observation_shape: tuple[int, ...] | None = None,
) -> list[EpisodeResult]:
    """Play `episodes` whole games of `env_id` and return their raw scores and lengths.

    `policy(obs)` gets the observation batch of every env that still has episodes to play and is at a
    decision (Atari: uint8 `[k, 4, 84, 84]`; a gymnasium task: floats; MinAtar: bool planes) and
    returns its greedy actions `[k]` (a `StatefulPolicy` is called as `policy.act_envs(obs, envs,
    episode_start)` instead: which env each observation is, and whose episode starts there); with probability `epsilon` each env takes a uniformly random
    action instead, drawn from an RNG seeded with `seed` (the envs are seeded with seed, seed + 1, ...).

    `protocol` says how an Atari or MinAtar game is played (default: `paper` / `minatar`; an
    `AtariProtocol`, `MinAtarProtocol` or its text form, see `envs.protocol`); `max_steps` overrides
    its step cap. `env_factory(n)`, instead of an env id, makes the user's own vector env of n envs
    (any wrapper stack; it must use `autoreset_mode=gym.vector.AutoresetMode.SAME_STEP`); `env_id` then
    only labels the progress bar. `observation_shape` picks MinAtar's layout for the network.

    Episodes are assigned to envs up front (env i plays `episodes // n + (i < episodes % n)` of them),
    so the result does not favour short episodes the way "the first `episodes` to finish" would. An
    episode ends when the game is over or after `max_steps` agent steps (`truncated=True`).

    `on_step(obs, greedy_actions, taken_actions)`, if given, sees every state the agent acts on before
    it is acted on; a truthy return value stops the run early (the episodes finished so far are
    returned). `episodes=None` plays until `on_step` stops it. Results are ordered by env, then episode.
    """
    if env_factory is not None and protocol is not None:
        raise ConfigError("pass either env_factory or protocol: a protocol only sets up the envs the plugin makes")
    if env_factory is None:
        if env_id is None:
            raise ConfigError("play needs an env_id or an env_factory")
        protocol = resolve_protocol(env_id, protocol)
    if episodes is None and on_step is None:
        raise ConfigError("play(episodes=None) needs an on_step hook that stops the run")
    if episodes is not None and episodes < 1:
        raise ConfigError(f"episodes must be at least 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"epsilon must lie in [0, 1], got {epsilon}")
    if max_steps is None:
        max_steps = DEFAULT_MAX_STEPS if protocol is None else protocol.max_steps
    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
    n = n_envs if episodes is None else min(n_envs, episodes)
    if env_factory is not None:
        env = _user_env(env_factory, n)
    else:
        env = make_vector_env(env_id, n, protocol=protocol, max_steps=max_steps, observation_shape=observation_shape)
    n_actions = int(env.single_action_space.n)
    quota = np.full(n, np.iinfo(np.int64).max) if episodes is None else np.array(
        [episodes // n + (i < episodes % n) for i in range(n)]
    )
    rng = np.random.default_rng(seed)
    per_env: list[list[EpisodeResult]] = [[] for _ in range(n)]
    score = np.zeros(n)
    length = np.zeros(n, dtype=np.int64)
    bar = tqdm(total=episodes, disable=not progress, desc=f"{env_id or 'env'} episodes", unit="ep")
    stateful = isinstance(policy, StatefulPolicy)
    starts = np.ones(n, dtype=bool)  # envs whose next decision is the first of an episode
    try:
        obs, info = env.reset(seed=seed)
        active = quota > 0
        while active.any():
            ask = active & info.get("decision", True)  # Atari: envs in a forced reset sequence do not decide
            greedy = np.zeros(n, dtype=np.int64)
            if ask.any():
                chosen = policy.act_envs(obs[ask], np.flatnonzero(ask), starts[ask]) if stateful else policy(obs[ask])
                greedy[ask] = _as_actions(chosen, int(ask.sum()), n_actions)
                starts[ask] = False
            explore = rng.random(n) < epsilon
            taken = np.where(explore, rng.integers(n_actions, size=n), greedy)
            if on_step is not None and ask.any() and on_step(obs[ask], greedy[ask], taken[ask]):
                break
            obs, reward, terminated, truncated, info = env.step(taken)
            score += reward
            length += ask
            cut = (length >= max_steps) & ~terminated & ~truncated
            finished = terminated | truncated | cut
            for i in np.flatnonzero(finished & active):
                per_env[i].append(EpisodeResult(float(score[i]), int(length[i]), not terminated[i]))
                bar.update(1)
            score[finished] = 0.0
            length[finished] = 0
            starts |= finished  # same-step autoreset: `obs` already holds the next episode's first observation
            if cut.any():
                obs, info = env.reset(options={"reset_mask": cut})
            active = np.array([len(done) for done in per_env]) < quota
    finally:
        bar.close()
        env.close()
    return [result for done in per_env for result in done]
