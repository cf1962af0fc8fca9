"""The paper's Atari evaluation protocol, as a fast native vectorised environment.

Tan, Patel & Kozma evaluate on `<Game>NoFrameskip-v4` dynamics: frame skip 4 with a max-pool over the
last two frames, up to 30 no-op starts, 84x84 gray frames stacked 4 deep, no sticky actions, FIRE on
reset where the game has it, a whole game (all lives) per episode, raw unclipped score, at most 18,000
agent steps per episode and epsilon = 0.05. `make_env` builds exactly that with ale-py's native
`AtariVectorEnv`; its observations are uint8 `[N, 4, 84, 84]`, frames oldest -> newest and zeros before
the first frame of an episode, the layout SB3's `VecFrameStack` + `VecTransposeImage` hand to a
`CnnPolicy` (tests/test_atari.py checks this against SB3's own wrappers).

`play` runs a fixed number of episodes with any batched greedy policy and epsilon-greedy exploration,
on Atari or on gymnasium's vector-observation tasks (CartPole-v1, ...: see `dqn2snn_plugin.envs.classic`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import ale_py
import gymnasium as gym
import numpy as np
import torch
from ale_py.vector_env import AtariVectorEnv
from tqdm.auto import tqdm

from dqn2snn_plugin.envs import classic
from dqn2snn_plugin.errors import ConfigError, EnvIdError, ObservationError

FRAME_SKIP = 4
NOOP_MAX = 30
# ale-py counts its own episode limit in emulator frames, no-op and FIRE starts included; ours is in
# agent steps and enforced in `play`, so the emulator's limit only has to lie safely beyond it.
_START_FRAMES_MARGIN = 4 * (NOOP_MAX + 8)

Policy = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]
StepHook = Callable[[np.ndarray, np.ndarray, np.ndarray], "bool | None"]


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode: raw game score, agent steps, and whether the step limit cut it short."""

    score: float
    length: int
    truncated: bool


@lru_cache(maxsize=1)
def _games() -> dict[str, str]:
    """`<Game>NoFrameskip-v4` id -> ale-py ROM name, as registered by ale-py itself."""
    gym.register_envs(ale_py)
    pattern = re.compile(r"^[A-Za-z0-9]+NoFrameskip-v4$")
    return {
        env_id: spec.kwargs["game"]
        for env_id, spec in gym.envs.registry.items()
        if pattern.match(env_id) and "game" in spec.kwargs
    }


def rom_name(env_id: str) -> str:
    """The ale-py ROM name of a `<Game>NoFrameskip-v4` id; EnvIdError for anything else."""
    games = _games()
    if env_id not in games:
        examples = ", ".join(["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4", "BoxingNoFrameskip-v4"])
        raise EnvIdError(
            f"unknown environment id {env_id!r}: expected one of the {len(games)} '<Game>NoFrameskip-v4' "
            f"ids that ale-py registers (e.g. {examples}) or a gymnasium task such as CartPole-v1"
        )
    return games[env_id]


@lru_cache(maxsize=None)
def action_count(env_id: str) -> int:
    """Size of the game's minimal action set (what `<Game>NoFrameskip-v4` and SB3's DQN use), or
    of a gymnasium task's discrete action space."""
    if classic.is_classic(env_id):
        return classic.action_count(env_id)
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(ale_py.roms.get_rom_path(rom_name(env_id)))
    return len(ale.getMinimalActionSet())


def check_action_count(env_id: str, n_actions: int) -> None:
    """Raise EnvIdError when a checkpoint with `n_actions` outputs cannot play `env_id`."""
    expected = action_count(env_id)
    if n_actions != expected:
        raise EnvIdError(
            f"the checkpoint has {n_actions} actions but {env_id} has {expected}: "
            "it was trained on another game (or another action set)"
        )


def make_env(
    env_id: str, n_envs: int, seed: int | None = None, *, max_steps: int = 18_000, noop_max: int = NOOP_MAX
) -> AtariVectorEnv:
    """A native vectorised `<Game>NoFrameskip-v4` env with the paper's evaluation settings.

    Same-step autoreset: the observation returned with a finished episode's `terminated`/`truncated`
    is already the first one of the next episode (its last one is in `info["final_obs"]`). When `seed`
    is given the env is reset with it (sub-env i gets seed + i) so that later autoresets are
    repeatable; otherwise call `env.reset(seed=...)` yourself. `max_steps` only sets ale-py's own
    frame limit beyond that many agent steps: `play` enforces the agent-step limit itself.
    `noop_max` is the paper's 30 unless a test needs deterministic starts (0).
    """
    game = rom_name(env_id)
    if n_envs < 1:
        raise ConfigError(f"n_envs must be at least 1, got {n_envs}")
    env = AtariVectorEnv(
        game,
        n_envs,
        max_num_frames_per_episode=FRAME_SKIP * max_steps + _START_FRAMES_MARGIN,
        repeat_action_probability=0.0,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        img_height=84,
        img_width=84,
        grayscale=True,
        stack_num=4,
        frameskip=FRAME_SKIP,
        maxpool=True,
        noop_max=noop_max,
        episodic_life=False,
        reward_clipping=False,
        use_fire_reset=True,
    )
    if seed is not None:
        env.reset(seed=seed)
    return env


def _as_actions(actions: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    """A policy's output as int64 numpy actions `[n]` (ObservationError for a wrong shape)."""
    if isinstance(actions, torch.Tensor):
        actions = actions.detach().cpu().numpy()
    actions = np.asarray(actions).astype(np.int64)
    if actions.shape != (n,):
        raise ObservationError(f"the policy returned actions of shape {actions.shape} for {n} observations")
    return actions


def play(
    policy: Policy,
    env_id: str,
    episodes: int | None,
    *,
    n_envs: int = 8,
    epsilon: float = 0.05,
    seed: int = 0,
    max_steps: int = 18_000,
    on_step: StepHook | None = None,
    progress: bool = False,
) -> list[EpisodeResult]:
    """Play `episodes` whole games of `env_id` and return their raw scores and lengths.

    `policy(obs)` gets the uint8 batch `[k, 4, 84, 84]` (a gymnasium task: its float batch) of every env that still has episodes to play
    (so a spiking policy runs batched across envs) and returns its greedy actions `[k]`; with
    probability `epsilon` each env takes a uniformly random action instead, drawn from an RNG seeded
    with `seed` (the envs are seeded with seed, seed + 1, ...), so a run is repeatable.

    Episodes are assigned to envs up front (env i plays `episodes // n + (i < episodes % n)` of them),
    so the result does not favour short episodes the way "the first `episodes` to finish" would. An
    episode ends when the game is over or after `max_steps` agent steps (`truncated=True`).

    `on_step(obs, greedy_actions, taken_actions)`, if given, sees every visited state before it is
    acted on; a truthy return value stops the run early (the episodes finished so far are returned).
    `episodes=None` plays until `on_step` stops it. Results are ordered by env, then by episode.
    """
    if episodes is None and on_step is None:
        raise ConfigError("play(episodes=None) needs an on_step hook that stops the run")
    if episodes is not None and episodes < 1:
        raise ConfigError(f"episodes must be at least 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"epsilon must lie in [0, 1], got {epsilon}")
    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
    n = n_envs if episodes is None else min(n_envs, episodes)
    env = classic.make_env(env_id, n) if classic.is_classic(env_id) else make_env(env_id, n, max_steps=max_steps)
    n_actions = int(env.single_action_space.n)
    quota = np.full(n, np.iinfo(np.int64).max) if episodes is None else np.array(
        [episodes // n + (i < episodes % n) for i in range(n)]
    )
    rng = np.random.default_rng(seed)
    per_env: list[list[EpisodeResult]] = [[] for _ in range(n)]
    score = np.zeros(n)
    length = np.zeros(n, dtype=np.int64)
    bar = tqdm(total=episodes, disable=not progress, desc=f"{env_id} episodes", unit="ep")
    try:
        obs, _ = env.reset(seed=seed)
        active = quota > 0
        while active.any():
            greedy = np.zeros(n, dtype=np.int64)
            greedy[active] = _as_actions(policy(obs[active]), int(active.sum()))
            explore = rng.random(n) < epsilon
            taken = np.where(explore, rng.integers(n_actions, size=n), greedy)
            if on_step is not None and on_step(obs[active], greedy[active], taken[active]):
                break
            obs, reward, terminated, truncated, _ = env.step(taken)
            score += reward
            length += 1
            cut = (length >= max_steps) & ~terminated & ~truncated
            finished = terminated | truncated | cut
            for i in np.flatnonzero(finished & active):
                per_env[i].append(EpisodeResult(float(score[i]), int(length[i]), not terminated[i]))
                bar.update(1)
            score[finished] = 0.0
            length[finished] = 0
            if cut.any():
                obs, _ = env.reset(options={"reset_mask": cut})
            active = np.array([len(done) for done in per_env]) < quota
    finally:
        bar.close()
        env.close()
    return [result for done in per_env for result in done]
