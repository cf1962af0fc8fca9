"""Run logic behind `dqn2snn evaluate` (and each cell of `sweep`, `benchmark` and the demo): play, measure, tabulate.

The paper's protocol: whole games with epsilon = 0.05 (`atari.play`), mean +- std of the raw score,
and the "conversion rate" = agreement of the SNN's and the DQN's greedy actions on the states the
SNN visits. We also report agreement on DQN-visited states, for the spike-count and the N + V readouts.

`evaluate` measures one (percentile, T) setting. `sweep` measures a grid of them and appends every
finished cell to `cells.jsonl` at once (flush + fsync), so an interrupted sweep resumes where it
stopped; `config.json` pins what decides the results, and a rerun with other settings is refused
(ResultsError) rather than mixed in. In a sweep, the DQN-visited agreement is measured on a fixed
held-out state set (separate episodes from calibration) for all T of a percentile in one simulation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dqn2snn_plugin.envs.atari import EpisodeResult, check_action_count, play
from dqn2snn_plugin.binary_coding import check_bits
from dqn2snn_plugin.calibration import _cache_key, collect_observations
from dqn2snn_plugin.checkpoint import DQNCheckpoint, load_dqn
from dqn2snn_plugin.conversion import BACKENDS, convert
from dqn2snn_plugin.errors import CalibrationError, ConfigError
from dqn2snn_plugin.metrics import AgreementRecorder, AgreementResult
from dqn2snn_plugin.normalization import check_percentile
from dqn2snn_plugin.io.results import markdown_table
from dqn2snn_plugin.coding import check_coding, check_T
from dqn2snn_plugin.network import SpikingQNetwork, check_readout

EPSILON = 0.05  # the paper's evaluation exploration
AGREEMENT_READOUTS = ("spikes+membrane", "spikes")


@dataclass(frozen=True)
class RunSettings:
    """Everything besides the checkpoint, T and p that decides a result (compared on resume)."""

    episodes: int = 10
    calibration_frames: int = 5000
    max_steps: int = 18_000
    n_envs: int = 8
    seed: int = 0
    backend: str = "spikingjelly"
    readout: str = "spikes+membrane"  # the readout the SNN acts on
    epsilon: float = EPSILON
    coding: str = "rate"  # how neurons send activations: "rate" (the paper) or "binary" (T-bit codes)
    channel_wise: bool = False  # one scale per channel instead of per layer

    def check(self) -> RunSettings:
        """Raise ConfigError for any out-of-range value; return self."""
        for name in ("episodes", "calibration_frames", "max_steps", "n_envs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must lie in [0, 1], got {self.epsilon}")
        check_seed(self.seed)
        check_readout(self.readout)
        check_coding(self.coding)
        return self

    def as_config(self) -> dict:
        """The settings as result files record them. Fields added after such files existed (coding,
        channel_wise) appear only when they differ from their defaults, so that earlier results, made
        with those defaults, stay resumable."""
        config = asdict(self)
        for name in ("coding", "channel_wise"):
            if config[name] == RunSettings.__dataclass_fields__[name].default:
                del config[name]
        return config


# ---------------------------------------------------------------- checks done before any work


# env i gets seed + i, and the held-out states seed + TEST_SEED_OFFSET + i: all must stay below 2**31 (ale-py)
MAX_SEED = 2**30


def check_seed(seed: int) -> int:
    """A seed in 0 .. MAX_SEED; ConfigError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED:,}, got {seed!r}")
    return int(seed)


def resolve_device(device: str) -> str:
    """"cpu" or "cuda"; ConfigError for "cuda" without a GPU or any other name."""
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")
    return device


def check_grid(Ts: Iterable[int], percentiles: Iterable[float | str], coding: str = "rate") -> tuple[list[int], list[float]]:
    """Validated, de-duplicated, ordered T values and percentiles ("max" -> 100); with binary coding T
    (bits) is at most `binary_coding.MAX_BITS`."""
    Ts = sorted({check_T(T) for T in Ts})
    ps = sorted({check_percentile(p) for p in percentiles})
    if not Ts or not ps:
        raise ConfigError("need at least one T and one percentile")
    if coding == "binary":
        check_bits(Ts[-1])
    return Ts, ps


def load_checked(source: str | Path, *, env_id: str | None = None, device: str = "cpu") -> DQNCheckpoint:
    """`load_dqn` plus the game checks: a known env id whose action count matches the network."""
    checkpoint = load_dqn(source, env_id=env_id, device=device)
    if checkpoint.env_id is None:
        raise CalibrationError(f"{source}: the checkpoint does not name its game: pass --env-id <Game>NoFrameskip-v4")
    check_action_count(checkpoint.env_id, checkpoint.n_actions)
    return checkpoint


# ---------------------------------------------------------------- playing and measuring


class _SnnPlayer:
    """The SNN as both a policy and the recorder's SNN, simulated once per step instead of twice.

    `play` calls the policy and then the recorder on the same observations; the second call reuses
    the first simulation. Also totals spikes and synaptic operations per decision.
    """

    def __init__(self, snn: SpikingQNetwork, T: int, readout: str) -> None:
        self.snn, self.T, self.readout = snn, T, readout
        self._obs: np.ndarray | None = None
        self._values: dict[str, torch.Tensor] = {}
        self.decisions, self.spikes, self.synaptic_ops = 0, 0.0, 0.0

    def readouts(self, obs: np.ndarray | torch.Tensor, T: int | None = None) -> dict[str, torch.Tensor]:
        obs = obs.cpu().numpy() if isinstance(obs, torch.Tensor) else np.asarray(obs)
        if T not in (None, self.T):
            raise ConfigError(f"this player simulates T={self.T}, asked for T={T}")
        if self._obs is None or self._obs.shape != obs.shape or not np.array_equal(self._obs, obs):
            if self.snn.carry_state and self._obs is not None and len(self._obs) != len(obs):
                self.snn.reset_state()  # `play` dropped envs that finished their games: rows no longer match
            self._values = self.snn.readouts(obs, T=self.T)
            stats = self.snn.last_stats
            self.decisions += len(obs)
            self.spikes += float(sum(s.float().sum() for s in stats.spikes))
            self.synaptic_ops += float(stats.synaptic_ops.float().sum())
            self._obs = obs.copy()
        return self._values

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        return self.readouts(obs)[self.readout].argmax(dim=1)


def score_summary(episodes: Sequence[EpisodeResult]) -> dict:
    """Mean, std (population) and the per-episode scores and lengths."""
    scores = np.array([e.score for e in episodes], dtype=np.float64)
    return {
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "scores": scores.tolist(),
        "lengths": [e.length for e in episodes],
        "truncated": sum(e.truncated for e in episodes),
    }


def agreement_summary(results: dict[str, AgreementResult]) -> dict:
    """{readout: {rate, rate_above_gap, spearman, n_states}} with NaN as None (valid JSON)."""
    def number(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        name: {"rate": r.rate, "rate_above_gap": number(r.rate_above_gap), "spearman": number(r.spearman),
               "n_states": len(r.dqn_actions)}
        for name, r in results.items()
    }


def play_dqn(checkpoint: DQNCheckpoint, settings: RunSettings, snn: SpikingQNetwork | None = None,
             T: int | None = None) -> tuple[dict, dict | None]:
    """DQN games: score summary, and agreement on the DQN-visited states when an SNN is given."""
    recorder = None if snn is None else AgreementRecorder(checkpoint, snn, T, readouts=AGREEMENT_READOUTS)
    episodes = play(checkpoint.act, checkpoint.env_id, settings.episodes, n_envs=settings.n_envs,
                    epsilon=settings.epsilon, seed=settings.seed, max_steps=settings.max_steps, on_step=recorder,
                    progress=True)
    return score_summary(episodes), None if recorder is None else agreement_summary(recorder.results())


def play_snn(checkpoint: DQNCheckpoint, snn: SpikingQNetwork, T: int, settings: RunSettings) -> dict:
    """SNN games: score summary, agreement on SNN-visited states (the paper's conversion rate), cost."""
    player = _SnnPlayer(snn, T, settings.readout)
    recorder = AgreementRecorder(checkpoint, player, T, readouts=AGREEMENT_READOUTS)
    episodes = play(player, checkpoint.env_id, settings.episodes, n_envs=settings.n_envs, epsilon=settings.epsilon,
                    seed=settings.seed, max_steps=settings.max_steps, on_step=recorder, progress=True)
    return {
        "score": score_summary(episodes),
        "agreement_snn_visited": agreement_summary(recorder.results()),
        "spikes_per_decision": player.spikes / player.decisions,
        "synaptic_ops_per_decision": player.synaptic_ops / player.decisions,
    }


def calibration_states(checkpoint: DQNCheckpoint, settings: RunSettings) -> np.ndarray:
    """The DQN's own epsilon-greedy states for calibration (cached on disk, default cache dir)."""
    return collect_observations(checkpoint, settings.calibration_frames, epsilon=settings.epsilon, seed=settings.seed,
                                n_envs=settings.n_envs, progress=True)


def checkpoint_digest(checkpoint: DQNCheckpoint) -> str:
    """Short hash of the Q-network's weights: identifies the checkpoint wherever the file lies."""
    return _cache_key(checkpoint)


def _header(checkpoint: DQNCheckpoint, settings: RunSettings) -> dict:
    return {"checkpoint": checkpoint.source, "checkpoint_sha": checkpoint_digest(checkpoint),
            "env_id": checkpoint.env_id, "settings": settings.as_config()}


def evaluate(checkpoint: DQNCheckpoint, *, T: int, percentile: float | str, settings: RunSettings,
             snn: SpikingQNetwork | None = None) -> dict:
    """One setting, the paper's way: DQN and SNN games, agreement on both state sets, spikes per decision.

    The SNN is converted from `settings.calibration_frames` calibration states unless given.
    Returns a JSON-ready dict (see `format_evaluation`).
    """
    T, p = check_T(T), check_percentile(percentile)
    settings.check()
    if snn is None:
        snn = convert(checkpoint, calibration_states(checkpoint, settings), percentile=p, backend=settings.backend,
                      readout=settings.readout, T=T, coding=settings.coding, channel_wise=settings.channel_wise)
    dqn_score, dqn_visited = play_dqn(checkpoint, settings, snn, T)
    snn_result = play_snn(checkpoint, snn, T, settings)
    return {
        **_header(checkpoint, settings), "T": T, "percentile": p, "dqn": {"score": dqn_score},
        "snn": snn_result, "agreement_dqn_visited": dqn_visited, "scales": snn.scales.as_dict(),
    }


def heldout_agreement(checkpoint: DQNCheckpoint, snn: SpikingQNetwork, states: np.ndarray, Ts: list[int],
                      batch_size: int = 256) -> dict[int, dict]:
    """Agreement summaries per T on fixed states, from one simulation of max(Ts) steps per batch."""
    q, values = [], {T: {r: [] for r in AGREEMENT_READOUTS} for T in Ts}
    for start in range(0, len(states), batch_size):
        batch = states[start : start + batch_size]
        q.append(checkpoint.q_values(batch).cpu())
        for T, readouts in snn.readouts_at(batch, Ts).items():
            for r in AGREEMENT_READOUTS:
                values[T][r].append(readouts[r].cpu())
    q_all = torch.cat(q)
    return {T: agreement_summary({r: AgreementResult.from_values(q_all, torch.cat(v)) for r, v in per.items()})
            for T, per in values.items()}


# ---------------------------------------------------------------- tables and files


def p_label(p: float) -> str:
    """A percentile as people write it: 99.9, or "max" for 100."""
    return "max" if p == 100.0 else f"{p:g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _score(summary: dict) -> str:
    return f"{summary['mean']:.1f} ± {summary['std']:.1f}"


def format_evaluation(result: dict) -> str:
    """The printed table of `evaluate`: one row per player, agreement per readout on its states."""
    s = result["settings"]
    snn = result["snn"]
    rows = []
    for who, score, agreement in (("DQN plays", result["dqn"]["score"], result["agreement_dqn_visited"]),
                                  ("SNN plays", snn["score"], snn["agreement_snn_visited"])):
        rows.append([who, _score(score), *(_pct(agreement[r]["rate"]) for r in AGREEMENT_READOUTS),
                     agreement[AGREEMENT_READOUTS[0]]["n_states"]])
    coding = s.get("coding", "rate")
    steps = f"T={result['T']}" + (" (binary coding: steps per layer, bits per spike code)" if coding == "binary" else "")
    title = (f"{result['env_id']}  {steps}  p={p_label(result['percentile'])}{'  per channel' * s.get('channel_wise', False)}  "
             f"{s['episodes']} episodes (ε={s['epsilon']}, ≤{s['max_steps']} steps)  SNN acts on {s['readout']}")
    table = markdown_table(["", "score (mean ± std)", *(f"agreement {r}" for r in AGREEMENT_READOUTS), "states"],
                           rows)
    cost = (f"spikes per decision: {snn['spikes_per_decision']:,.0f}   "
            f"synaptic ops per decision: {snn['synaptic_ops_per_decision']:,.0f}")
    return f"{title}\n{table}\n{cost}"
