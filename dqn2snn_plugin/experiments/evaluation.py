"""Playing and measuring, behind `dqn2snn evaluate` and every cell of `sweep`, `benchmark` and the demo.

The paper's protocol: whole games with epsilon = 0.05 (`atari.play`), mean +- std of the raw score,
and the "conversion rate" = agreement of the SNN's and the DQN's greedy actions on the states the
SNN visits. We also report agreement on DQN-visited states, for the spike-count and the N + V readouts.

Every state set drawn from the DQN's play for the networks (calibration, held-out) comes from
episodes separate from the measured games (`calibration_draws`), and each result records how
(`records.StateDraw`): otherwise, with episodes >= n_envs, the calibration states would be exactly
the first states of the DQN's measured games, and the agreement on them flattering.
Results are typed records (`records`); their tables are in `report`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from dqn2snn_plugin.calibration import TEST_SEED_OFFSET, calibration_and_test_observations, collect_observations
from dqn2snn_plugin.checkpoint import DQNCheckpoint, load_dqn
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.costs import CostMeter, compare_with_dqn
from dqn2snn_plugin.envs.play import EnvFactory, check_action_count, check_observation_shape, play, resolve_protocol
from dqn2snn_plugin.envs.protocol import Protocol
from dqn2snn_plugin.errors import CalibrationError, ConfigError
from dqn2snn_plugin.experiments.records import (
    AGREEMENT_READOUTS, Agreements, Evaluation, Header, ScoreSummary, SnnPlay, StateDraw, agreements_of,
    weights_digest,
)
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.io.checks import memory_bytes
from dqn2snn_plugin.metrics import AgreementRecorder, AgreementResult
from dqn2snn_plugin.normalization import check_percentile
from dqn2snn_plugin.coding import check_coding, check_T
from dqn2snn_plugin.network import SpikingQNetwork

# ---------------------------------------------------------------- checks done before any work


def resolve_device(device: str) -> str:
    """"cpu" or "cuda"; ConfigError for "cuda" without a GPU or any other name."""
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")
    return device


def check_grid(Ts: Iterable[int], percentiles: Iterable[float | str],
               coding: str = "rate") -> tuple[list[int], list[float]]:
    """Validated, de-duplicated, ordered T values and percentiles ("max" -> 100); T within what the coding
    can simulate (binary coding: at most `binary_coding.MAX_BITS` bits)."""
    Ts = sorted({check_T(T) for T in Ts})
    ps = sorted({check_percentile(p) for p in percentiles})
    if not Ts or not ps:
        raise ConfigError("need at least one T and one percentile")
    check_coding(coding).check_T(Ts[-1])
    return Ts, ps


ENV_ID_HINT = "pass --env-id (e.g. BreakoutNoFrameskip-v4, MinAtar/Breakout-v1, CartPole-v1)"


def load_checked(source: str | Path, *, env_id: str | None = None, device: str = "cpu",
                 input_scale: float | None = None, protocol: Protocol | str | None = None) -> DQNCheckpoint:
    """`load_dqn` plus the game checks: a known env id, playable under `protocol`, whose action count
    and observation shape match the network's; `input_scale` is `load_dqn`'s."""
    checkpoint = load_dqn(source, env_id=env_id, device=device, input_scale=input_scale)
    if checkpoint.env_id is None:
        raise CalibrationError(f"{source}: the checkpoint does not name its game: {ENV_ID_HINT}")
    check_action_count(checkpoint.env_id, checkpoint.n_actions, protocol)
    check_observation_shape(checkpoint.env_id, checkpoint.observation_shape, protocol)
    return checkpoint


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# memory of one parallel game: an ale-py AtariVectorEnv sub-env with its 4x84x84 frame stack, 1.7 MiB
# (resident memory of 33 envs less 1 env, divided by 32, measured on Breakout); gymnasium's tasks take less
ENV_BYTES = 1_800_000


def check_memory(checkpoint: DQNCheckpoint, settings: RunSettings, test_frames: int = 0) -> None:
    """ConfigError, before any work, when a run cannot fit in this machine's memory: the parallel games
    (`ENV_BYTES` each), the calibration frames held with every layer's activations (float32, for the
    exact percentiles of `normalization.layer_scales`), the held-out frames as float32 observations."""
    if settings.n_envs * ENV_BYTES > memory_bytes():
        raise ConfigError(f"--n-envs {settings.n_envs:,} needs about {_bytes(settings.n_envs * ENV_BYTES)} of memory "
                          f"(about {_bytes(ENV_BYTES)} per game), more than this machine's {_bytes(memory_bytes())}: "
                          f"use at most {memory_bytes() // ENV_BYTES:,}")
    with torch.no_grad():
        x = torch.zeros((1, *checkpoint.observation_shape), device=next(checkpoint.q_network.parameters()).device)
        elements = x.numel()
        for layer in checkpoint.q_network:
            x = layer(x)
            elements += x.numel()
    per_frame, per_test_frame = 4 * elements, 4 * math.prod(checkpoint.observation_shape)
    need, have = settings.calibration_frames * per_frame + test_frames * per_test_frame, memory_bytes()
    if need > have:
        most = max(0, have - test_frames * per_test_frame) // per_frame
        raise ConfigError(f"--calibration-frames {settings.calibration_frames:,}"
                          + (f" and --test-frames {test_frames:,}" if test_frames else "")
                          + f" need about {_bytes(need)} of memory ({_bytes(per_frame)} per calibration frame with "
                          f"its activations), more than this machine's {_bytes(have)}: use at most "
                          f"{most:,} calibration frames")


# ---------------------------------------------------------------- playing and measuring


class _SnnPlayer:
    """The SNN as both a policy and the recorder's SNN, simulated once per decision.

    Every policy call (`act_envs`, or a plain call) simulates its observations and counts them: spikes
    and synaptic operations per decision and the cost counts (`meter`). `play` then calls the recorder
    on the same observations, whose `readouts` reuses that simulation.

    A `StatefulPolicy` (`envs.play`): where the network carries state (its carry_state, or a coding whose
    carried state only saves work: delta coding) each env keeps its own rows, reset where its episode
    starts (`SpikingQNetwork.readouts(rows=...)`, `reset_state(rows)`). Observations that are not the
    decision just taken (the DQN's own states, `play_dqn`) run from a fresh start, one decision each:
    for delta coding that is the same decision (exact) at the cost of a first decision; for a carrying
    rate SNN it is the start of an episode.
    """

    def __init__(self, snn: SpikingQNetwork, T: int, readout: str) -> None:
        self.snn, self.T, self.readout = snn, T, readout
        self.carry = snn.carry_state or snn.coding.carries_exactly
        self._obs: np.ndarray | None = None
        self._values: dict[str, torch.Tensor] = {}
        self.decisions, self.spikes, self.synaptic_ops = 0, 0.0, 0.0
        self.meter = CostMeter(snn)

    def readouts(self, obs: np.ndarray | torch.Tensor, T: int | None = None) -> dict[str, torch.Tensor]:
        """The recorder's call: the values of the decision just taken on `obs`, or a fresh one."""
        obs = obs.cpu().numpy() if isinstance(obs, torch.Tensor) else np.asarray(obs)
        if T not in (None, self.T):
            raise ConfigError(f"this player simulates T={self.T}, asked for T={T}")
        if self._obs is not None and self._obs.shape == obs.shape and np.array_equal(self._obs, obs):
            return self._values
        return self._fresh(obs)

    @contextmanager
    def _carrying(self, carry: bool) -> Iterator[None]:
        """The network's carry_state set to `carry` for the block, then back as it was."""
        carried, self.snn.carry_state = self.snn.carry_state, carry
        try:
            yield
        finally:
            self.snn.carry_state = carried

    def _fresh(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        with self._carrying(False):
            return self.snn.readouts(obs, T=self.T)

    def _decide(self, obs: np.ndarray, envs: np.ndarray | None = None,
                episode_start: np.ndarray | None = None) -> torch.Tensor:
        """One decision per observation, continuing each env's rows where the state is carried; counted."""
        obs = np.asarray(obs)
        if not (self.carry and envs is not None):
            self._values = self._fresh(obs)
        else:
            with self._carrying(True):
                if episode_start is not None and episode_start.any():
                    self.snn.reset_state(envs[episode_start])
                self._values = self.snn.readouts(obs, T=self.T, rows=envs)
        stats = self.snn.last_stats
        self.decisions += len(obs)
        self.spikes += float(sum(s.float().sum() for s in stats.spikes))
        self.synaptic_ops += float(stats.synaptic_ops.float().sum())
        self.meter.add(stats, obs)
        self._obs = obs.copy()
        return self._values[self.readout].argmax(dim=1)

    def act_envs(self, obs: np.ndarray, envs: np.ndarray, episode_start: np.ndarray) -> torch.Tensor:
        return self._decide(obs, envs, episode_start)

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        return self._decide(obs)


def _env(checkpoint: DQNCheckpoint, settings: RunSettings, env_factory: EnvFactory | None) -> dict:
    """How `play` and `collect_observations` make the games: the user's own vector env (`env_factory`),
    or the checkpoint's game under the settings' protocol."""
    if env_factory is not None:
        return {"env_factory": env_factory}
    return {"protocol": settings.protocol, "observation_shape": checkpoint.observation_shape}


def play_dqn(checkpoint: DQNCheckpoint, settings: RunSettings, snn: SpikingQNetwork | None = None,
             T: int | None = None, env_factory: EnvFactory | None = None) -> tuple[ScoreSummary, Agreements | None]:
    """DQN games: score summary, and agreement on the DQN-visited states when an SNN is given."""
    # through `_SnnPlayer`: each DQN-visited state from a fresh start, also for an SNN that carries state
    recorder = None if snn is None else AgreementRecorder(checkpoint, _SnnPlayer(snn, T, settings.readout), T,
                                                          readouts=AGREEMENT_READOUTS)
    episodes = play(checkpoint.act, checkpoint.env_id, settings.episodes, n_envs=settings.n_envs,
                    epsilon=settings.epsilon, seed=settings.seed, max_steps=settings.max_steps, on_step=recorder,
                    progress=True, **_env(checkpoint, settings, env_factory))
    return ScoreSummary.of(episodes), None if recorder is None else agreements_of(recorder.results())


def play_snn(checkpoint: DQNCheckpoint, snn: SpikingQNetwork, T: int, settings: RunSettings,
             env_factory: EnvFactory | None = None) -> SnnPlay:
    """SNN games: score summary, agreement on SNN-visited states (the paper's conversion rate), cost: spikes
    and synaptic operations per decision, and the energy per decision over the states it visited, priced as
    the settings say (`cost_precision`, `cost_weight_reads`, `energy_table`) against the int8 and fp32 DQN."""
    player = _SnnPlayer(snn, T, settings.readout)
    recorder = AgreementRecorder(checkpoint, player, T, readouts=AGREEMENT_READOUTS)
    try:
        episodes = play(player, checkpoint.env_id, settings.episodes, n_envs=settings.n_envs, epsilon=settings.epsilon,
                        seed=settings.seed, max_steps=settings.max_steps, on_step=recorder, progress=True,
                        **_env(checkpoint, settings, env_factory))
    finally:
        snn.reset_state()  # the games' per-env state is theirs: a later call starts fresh
    table = settings.energy_table
    cost = compare_with_dqn(player.meter.report(settings.cost_precision, settings.cost_weight_reads, table),
                            checkpoint, table)
    return SnnPlay(ScoreSummary.of(episodes), agreements_of(recorder.results()), player.spikes / player.decisions,
                   player.synaptic_ops / player.decisions, cost)


def calibration_draws(settings: RunSettings, test_frames: int = 0) -> tuple[StateDraw, StateDraw]:
    """How the states for the networks are drawn, the one rule for every command: the measured games
    use env seeds seed + i; the calibration states come from `calibration_and_test_observations` at
    seed + TEST_SEED_OFFSET (env seeds seed + TEST_SEED_OFFSET + i) and its held-out states from the
    offset after (seed + 2 TEST_SEED_OFFSET + i), so no set shares an episode with the games or another set."""
    games_end = settings.seed + settings.n_envs  # the games' env seeds are seed .. games_end - 1
    draws = []
    for frames, first in ((settings.calibration_frames, settings.seed + TEST_SEED_OFFSET),
                          (test_frames, settings.seed + 2 * TEST_SEED_OFFSET)):
        draws.append(StateDraw(frames, first, settings.n_envs, settings.epsilon, separate=first >= games_end))
    return draws[0], draws[1]


def calibration_states(checkpoint: DQNCheckpoint, settings: RunSettings,
                       env_factory: EnvFactory | None = None) -> tuple[np.ndarray, StateDraw]:
    """The DQN's own epsilon-greedy states for calibration (`calibration_draws`; cached on disk), and how drawn."""
    draw, _ = calibration_draws(settings)
    check_memory(checkpoint, settings)
    return collect_observations(checkpoint, draw.frames, epsilon=draw.epsilon, seed=draw.first_seed,
                                n_envs=draw.n_envs, progress=True, **_calibration_env(settings, env_factory)), draw


def calibration_and_heldout_states(checkpoint: DQNCheckpoint, settings: RunSettings, test_frames: int
                                   ) -> tuple[np.ndarray, np.ndarray, StateDraw, StateDraw]:
    """Calibration states and held-out test states (`calibration_draws`), and how each set was drawn."""
    draw, test_draw = calibration_draws(settings, test_frames)
    check_memory(checkpoint, settings, test_frames)
    calibration, test = calibration_and_test_observations(
        checkpoint, draw.frames, test_frames, seed=draw.first_seed, epsilon=draw.epsilon, n_envs=draw.n_envs,
        progress=True, protocol=settings.protocol)
    return calibration, test, draw, test_draw


def _calibration_env(settings: RunSettings, env_factory: EnvFactory | None) -> dict:
    """`_env` for `collect_observations`, which reads the layout from the checkpoint itself."""
    return {"env_factory": env_factory} if env_factory is not None else {"protocol": settings.protocol}


def header(checkpoint: DQNCheckpoint, settings: RunSettings, env_factory: EnvFactory | None = None) -> Header:
    """Which network (file and weights digest), which game played how (the protocol resolved for
    its family: a default protocol is recorded too; or the user's env factory, by name), which settings."""
    if env_factory is not None:
        played = {"env_factory": getattr(env_factory, "__qualname__", type(env_factory).__name__)}
    else:
        protocol = resolve_protocol(checkpoint.env_id, settings.protocol)
        played = None if protocol is None else protocol.to_json()
    return Header(checkpoint.source, weights_digest(checkpoint), checkpoint.env_id, settings.as_config(), played)


def evaluate(checkpoint: DQNCheckpoint, *, T: int, percentile: float | str, settings: RunSettings,
             snn: SpikingQNetwork | None = None, env_factory: EnvFactory | None = None) -> Evaluation:
    """One setting, the paper's way: DQN and SNN games, agreement on both state sets, spikes per decision,
    and the energy per decision of the SNN against the int8 and fp32 DQN (`result.snn.cost`).

    The SNN is converted from `settings.calibration_frames` calibration states (episodes separate from
    the games, `calibration_draws`) unless given; a given SNN's calibration is the caller's, recorded as None.
    `env_factory(n)` plays every game (calibration too) in the user's own vector env instead of the
    checkpoint's game under `settings.protocol` (see `envs.play.play`); the result records its name.
    """
    T, p = check_T(T), check_percentile(percentile)
    settings.check()
    draw = None
    if snn is None:
        states, draw = calibration_states(checkpoint, settings, env_factory)
        snn = convert(checkpoint, states, percentile=p, backend=settings.backend, readout=settings.readout, T=T,
                      coding=settings.coding, channel_wise=settings.channel_wise,
                      residual_carry=settings.residual_carry)
    dqn_score, dqn_visited = play_dqn(checkpoint, settings, snn, T, env_factory)
    snn.reset_state()  # a carrying SNN followed the DQN's games: its own start afresh
    return Evaluation(header(checkpoint, settings, env_factory), T, p, dqn_score,
                      play_snn(checkpoint, snn, T, settings, env_factory), dqn_visited, snn.scales.as_dict(), draw)


def heldout_agreement(checkpoint: DQNCheckpoint, snn: SpikingQNetwork, states: np.ndarray, Ts: list[int],
                      batch_size: int = 256) -> dict[int, Agreements]:
    """Agreement per T on fixed states, from one simulation of max(Ts) steps per batch."""
    q, values = [], {T: {r: [] for r in AGREEMENT_READOUTS} for T in Ts}
    for start in range(0, len(states), batch_size):
        batch = states[start : start + batch_size]
        q.append(checkpoint.q_values(batch).cpu())
        for T, readouts in snn.readouts_at(batch, Ts).items():
            for r in AGREEMENT_READOUTS:
                values[T][r].append(readouts[r].cpu())
    q_all = torch.cat(q)
    return {T: agreements_of({r: AgreementResult.from_values(q_all, torch.cat(v)) for r, v in per.items()})
            for T, per in values.items()}
