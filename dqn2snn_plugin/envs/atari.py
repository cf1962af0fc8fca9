"""Atari games played through an `AtariProtocol`, on ale-py's fast native vectorised environment.

ale-py's `AtariVectorEnv` renders the 84x84 gray frames and does frame skip (with or without
max-pool), no-op starts, its own one-frame FIRE press, sticky actions, the full action set and the
4-frame stack in C++. What it cannot express, `ProtocolEnv` adds on top of it:
- a stack filled with copies of the first frame (ale-py always zero-fills; gymnasium's
  `FrameStackObservation(padding_type="reset")` does this but wraps one env, not a vector env, and
  gymnasium's `AtariPreprocessing` needs OpenCV, which this project does not depend on, and always
  max-pools);
- SB3's FireResetEnv sequence (a FIRE step, then an action-2 step) and SB3's EpisodicLifeEnv as an
  agent sees it (at a life loss: stack restart, a NOOP step and the FIRE sequence, game continues;
  ale-py's own `episodic_life` restarts the whole game at each life loss instead).
Those forced steps are not decisions: `info["decision"]` marks the envs whose observation the agent
acts on (`play` asks the policy only for those, and forced actions replace whatever it is given).

Observations are uint8 `[N, 4, 84, 84]`, frames oldest -> newest, the layout SB3's `VecFrameStack` +
`VecTransposeImage` hand to a `CnnPolicy`. tests/test_atari.py checks the `paper`, `sb3` and
`cleanrl` presets against SB3's own wrappers (through lost lives and a game over) and `ale-v5`
against gymnasium's AtariPreprocessing + FrameStackObservation.
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

import ale_py
import gymnasium as gym
import numpy as np
from ale_py.vector_env import AtariVectorEnv

from dqn2snn_plugin.envs.protocol import AtariProtocol, check_protocol
from dqn2snn_plugin.errors import ConfigError, EnvIdError

_ID_PATTERNS = {"v4": re.compile(r"^[A-Za-z0-9]+NoFrameskip-v4$"), "v5": re.compile(r"^ALE/[A-Za-z0-9]+-v5$")}
_ID_FORMS = {"v4": "<Game>NoFrameskip-v4", "v5": "ALE/<Game>-v5"}
_FIRE, _NOOP, _SB3_SECOND_FIRE_ACTION = 1, 0, 2  # action indices FireResetEnv and EpisodicLifeEnv step with
# ale-py counts its own episode limit in emulator frames, starts included; ours is in agent steps and
# enforced in `play`, so the emulator's limit only has to lie safely beyond it.
_START_STEPS_MARGIN = 1000
OBSERVATION_SHAPE = (4, 84, 84)  # every protocol's: a 4-frame stack of 84x84 gray frames


@lru_cache(maxsize=None)
def _games(version: str) -> dict[str, str]:
    """Registered id -> ale-py ROM name, for the ids of one ALE version ("v4": `<Game>NoFrameskip-v4`)."""
    gym.register_envs(ale_py)
    return {
        env_id: spec.kwargs["game"]
        for env_id, spec in gym.envs.registry.items()
        if _ID_PATTERNS[version].match(env_id) and "game" in spec.kwargs
    }


def rom_name(env_id: str, protocol: AtariProtocol | None = None) -> str:
    """The ale-py ROM name of `env_id`, which must be an id of the protocol's `env_version`; EnvIdError else."""
    version = check_protocol(protocol, "atari").env_version
    games = _games(version)
    if env_id in games:
        return games[env_id]
    other = next((v for v in _ID_PATTERNS if v != version and env_id in _games(v)), None)
    if other is not None:
        raise EnvIdError(f"{env_id} is an ALE {other} id but the protocol plays {_ID_FORMS[version]} ids: "
                         f"add env_version={other} to the protocol, or name the game as {_ID_FORMS[version]}")
    examples = {"v4": "BreakoutNoFrameskip-v4, PongNoFrameskip-v4", "v5": "ALE/Breakout-v5, ALE/Pong-v5"}[version]
    raise EnvIdError(
        f"unknown environment id {env_id!r}: expected one of the {len(games)} '{_ID_FORMS[version]}' ids that "
        f"ale-py registers (e.g. {examples}), a MinAtar/<Game>-v1 id or a gymnasium task such as CartPole-v1"
    )


@lru_cache(maxsize=None)
def _action_set(env_id: str, protocol: AtariProtocol) -> tuple[int, ...]:
    """The ALE actions of the game under the protocol's action set (minimal: what SB3's DQN uses)."""
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(ale_py.roms.get_rom_path(rom_name(env_id, protocol)))
    actions = ale.getMinimalActionSet() if protocol.action_set == "minimal" else ale.getLegalActionSet()
    return tuple(action.value for action in actions)


def game_action_count(env_id: str, protocol: AtariProtocol | None = None) -> int:
    """Number of actions of the game under the protocol (minimal set by default, 18 for the full set)."""
    return len(_action_set(env_id, check_protocol(protocol, "atari")))


class ProtocolEnv(gym.vector.VectorWrapper):
    """An `AtariVectorEnv` (same-step autoreset) plus the protocol settings ale-py cannot express.

    Per env it tracks the actions still forced on it (the SB3 FIRE sequence after a reset, the NOOP +
    FIRE sequence after a life loss), the lives (a life loss with `terminal_on_life_loss` is not an end
    of episode: the score counts whole games), and the age of the stack since it last restarted, so
    that the slots older than the restart are zero or copies of the first frame, as the protocol says.
    """

    def __init__(self, env: AtariVectorEnv, protocol: AtariProtocol, has_fire: bool) -> None:
        super().__init__(env)
        self.protocol = protocol
        fire = (_FIRE, _SB3_SECOND_FIRE_ACTION) if has_fire and protocol.fire_reset != "off" else ()
        self.start_actions = fire if protocol.fire_reset == "sb3" else ()
        self.life_actions = (_NOOP, *fire)
        n = env.num_envs
        self.pending: list[list[int]] = [[] for _ in range(n)]
        self.age = np.zeros(n, dtype=np.int64)
        self.lives = np.zeros(n, dtype=np.int64)

    def _restart(self, envs: np.ndarray, actions: tuple[int, ...]) -> None:
        for i in np.flatnonzero(envs):
            self.pending[i] = list(actions)
            self.age[i] = 0

    def _fill(self, obs: np.ndarray, info: dict) -> tuple[np.ndarray, dict]:
        """Zero or copy-fill the stack slots older than each env's restart; mark the decision points."""
        decision = np.array([not actions for actions in self.pending])
        depth = obs.shape[1]
        young = np.flatnonzero(decision & (self.age < depth - 1))
        if len(young):
            obs = obs.copy()
            for i in young:
                first = depth - 1 - self.age[i]
                obs[i, :first] = obs[i, first] if self.protocol.stack_fill == "copy" else 0
        return obs, {**info, "decision": decision}

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        restarted = np.ones(self.num_envs, bool) if not options or "reset_mask" not in options else options["reset_mask"]
        self._restart(restarted, self.start_actions)
        self.lives = np.where(restarted, info["lives"], self.lives)
        return self._fill(obs, info)

    def step(self, actions: np.ndarray):
        actions = np.array(actions, dtype=np.int64)
        forced = np.array([bool(pending) for pending in self.pending])
        for i in np.flatnonzero(forced):
            actions[i] = self.pending[i].pop(0)
        obs, reward, terminated, truncated, info = self.env.step(actions)
        # a forced sequence that just ended leaves the first observation the agent acts on: age 0
        self.age = np.where(forced & np.array([not p for p in self.pending]), 0, self.age + 1)
        lives = info["lives"].astype(np.int64)
        life_lost = terminated & (lives < self.lives) if self.protocol.terminal_on_life_loss else np.zeros_like(terminated)
        terminated = terminated & ~life_lost
        self._restart(terminated | truncated, self.start_actions)
        self._restart(life_lost, self.life_actions)
        self.lives = lives
        obs, info = self._fill(obs, info)
        return obs, reward, terminated, truncated, info


def make_env(
    env_id: str,
    n_envs: int,
    seed: int | None = None,
    *,
    protocol: AtariProtocol | str | None = None,
    max_steps: int | None = None,
    noop_max: int | None = None,
) -> ProtocolEnv:
    """A native vectorised Atari env played under `protocol` (default: the paper's).

    Same-step autoreset: the observation returned with a finished episode's `terminated`/`truncated`
    is already the first one of the next episode (its last one is in `info["final_obs"]`). When `seed`
    is given the env is reset with it (sub-env i gets seed + i) so that later autoresets are
    repeatable; otherwise call `env.reset(seed=...)` yourself. `max_steps` (default the protocol's) only
    sets ale-py's own frame limit beyond that many agent steps: `play` enforces the step limit itself.
    `noop_max`, if given, overrides the protocol's (0 gives deterministic starts for tests).
    """
    protocol = check_protocol(protocol, "atari")
    if noop_max is not None:
        protocol = dataclasses.replace(protocol, noop_max=noop_max)
    game = rom_name(env_id, protocol)
    if n_envs < 1:
        raise ConfigError(f"n_envs must be at least 1, got {n_envs}")
    steps = protocol.max_steps if max_steps is None else max_steps
    env = AtariVectorEnv(
        game,
        n_envs,
        max_num_frames_per_episode=protocol.frame_skip * (steps + _START_STEPS_MARGIN) + protocol.noop_max,
        repeat_action_probability=protocol.sticky_actions,
        full_action_space=protocol.action_set == "full",
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        img_height=OBSERVATION_SHAPE[1],
        img_width=OBSERVATION_SHAPE[2],
        grayscale=True,
        stack_num=OBSERVATION_SHAPE[0],
        frameskip=protocol.frame_skip,
        maxpool=protocol.max_pool,
        noop_max=protocol.noop_max,
        episodic_life=False,
        life_loss_info=protocol.terminal_on_life_loss,
        reward_clipping=False,
        use_fire_reset=protocol.fire_reset == "ale",
    )
    has_fire = ale_py.Action.FIRE.value in _action_set(env_id, protocol)
    wrapped = ProtocolEnv(env, protocol, has_fire)
    if seed is not None:
        wrapped.reset(seed=seed)
    return wrapped


def __getattr__(name: str) -> object:
    """`play`, `EpisodeResult`, `action_count` and `check_action_count` now live in `envs.play` (they
    serve every family of env); importing them from here, as before, still works."""
    if name in ("play", "EpisodeResult", "action_count", "check_action_count"):
        from dqn2snn_plugin.envs import play as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
