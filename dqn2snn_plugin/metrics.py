"""How closely a spiking network follows its DQN: the paper's "conversion rate" and finer measures.

The SNN side is any "policy-like" object: `snn(obs, T=..., readout=...)` returns readout values
`[B, n_actions]` (the `readout` keyword is passed only when one is named), and an optional
`snn.readouts(obs, T=...) -> dict[str, Tensor]` gives several readouts from one simulation.
Greedy actions are `argmax` over values everywhere, ties going to the lowest action index.

Measures, over a set of states:
- `rate`: fraction of states where the SNN's greedy action equals the DQN's.
- `rate_above_gap`: the same, restricted to states whose DQN top-two Q gap is large enough to matter:
  `gap > gap_threshold` (absolute, in Q units) and `gap > relative_gap_threshold * |max Q|`. Where the
  DQN itself barely prefers one action, a flip costs almost nothing; these states isolate real errors.
- `spearman`: mean over states of the Spearman rank correlation between the DQN's Q-values and the
  SNN's readouts (average ranks for ties); states where either side is constant are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.errors import ConfigError, ObservationError
from dqn2snn_plugin.observations import as_observation_array

DEFAULT_READOUT = "default"


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Row-wise average ranks (ties share the mean of their ranks), float64."""
    order = values.argsort(dim=1, stable=True)
    ordinal = torch.empty_like(order, dtype=torch.float64)
    ordinal.scatter_(1, order, torch.arange(values.shape[1], dtype=torch.float64).expand_as(ordinal).clone())
    # average over ties: for each element, mean ordinal rank of the equal elements of its row
    equal = values.unsqueeze(2) == values.unsqueeze(1)
    return (equal * ordinal.unsqueeze(1)).sum(dim=2) / equal.sum(dim=2)


def spearman_per_state(q_values: torch.Tensor, readouts: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each row pair `[B]`; NaN where either row is constant."""
    a = _ranks(q_values.double())
    b = _ranks(readouts.double())
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    return torch.where(denominator > 0, (a * b).sum(dim=1) / denominator, torch.nan)


def top_two_gap(q_values: torch.Tensor) -> torch.Tensor:
    """Best minus second-best Q per state `[B]` (0 with a single action)."""
    if q_values.shape[1] < 2:
        return torch.zeros(q_values.shape[0], dtype=q_values.dtype)
    top = q_values.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


@dataclass(frozen=True)
class AgreementResult:
    """Agreement between DQN and SNN over a set of states, with the per-state detail."""

    dqn_actions: torch.Tensor  # [N] int64
    snn_actions: torch.Tensor  # [N] int64
    q_values: torch.Tensor  # [N, n_actions] DQN Q-values
    snn_values: torch.Tensor  # [N, n_actions] SNN readout values
    q_gaps: torch.Tensor  # [N] DQN top-two gap
    rate: float  # fraction of states with equal greedy actions
    rate_above_gap: float  # same, over states passing the gap filter (NaN if none does)
    n_above_gap: int  # states passing the gap filter
    spearman: float  # mean per-state rank correlation (NaN if no state has one)

    @classmethod
    def from_values(
        cls,
        q_values: torch.Tensor,
        snn_values: torch.Tensor,
        *,
        gap_threshold: float | None = None,
        relative_gap_threshold: float | None = None,
    ) -> AgreementResult:
        """Compute every measure from Q-values and readouts of the same states (see module doc)."""
        if q_values.shape != snn_values.shape or q_values.ndim != 2 or len(q_values) == 0:
            raise ObservationError(
                f"need non-empty Q-values and SNN readouts of equal shape [N, n_actions], got "
                f"{tuple(q_values.shape)} and {tuple(snn_values.shape)}"
            )
        q_values, snn_values = q_values.detach().cpu().float(), snn_values.detach().cpu().float()
        dqn_actions, snn_actions = q_values.argmax(dim=1), snn_values.argmax(dim=1)
        match = dqn_actions == snn_actions
        gaps = top_two_gap(q_values)
        keep = torch.ones_like(match)
        if gap_threshold is not None:
            keep &= gaps > gap_threshold
        if relative_gap_threshold is not None:
            keep &= gaps > relative_gap_threshold * q_values.max(dim=1).values.abs()
        n_keep = int(keep.sum())
        spearman = spearman_per_state(q_values, snn_values)
        finite = ~spearman.isnan()
        return cls(
            dqn_actions=dqn_actions,
            snn_actions=snn_actions,
            q_values=q_values,
            snn_values=snn_values,
            q_gaps=gaps,
            rate=float(match.double().mean()),
            rate_above_gap=float(match[keep].double().mean()) if n_keep else float("nan"),
            n_above_gap=n_keep,
            spearman=float(spearman[finite].mean()) if finite.any() else float("nan"),
        )


def snn_readouts(snn: object, obs: torch.Tensor, T: int, readouts: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """Readout values per readout name, from one simulation when `snn.readouts` exists.

    `readouts=None` means every readout `snn.readouts` gives, or `snn(obs, T=T)` under the name
    "default" for an SNN without that method.
    """
    many = getattr(snn, "readouts", None)
    if callable(many):
        values = many(obs, T=T)
        names = list(values) if readouts is None else list(readouts)
        missing = [name for name in names if name not in values]
        if missing:
            raise ConfigError(f"the SNN gives no readout named {missing}: it has {sorted(values)}")
        return {name: torch.as_tensor(values[name]) for name in names}
    if readouts is None:
        return {DEFAULT_READOUT: torch.as_tensor(snn(obs, T=T))}
    return {name: torch.as_tensor(snn(obs, T=T, readout=name)) for name in readouts}


@torch.no_grad()
def agreement(
    dqn: DQNCheckpoint,
    snn: object,
    observations: np.ndarray | torch.Tensor | Iterable[np.ndarray | torch.Tensor],
    T: int,
    *,
    readout: str | None = None,
    gap_threshold: float | None = None,
    relative_gap_threshold: float | None = None,
    batch_size: int = 256,
) -> AgreementResult:
    """Agreement of the SNN's greedy actions with the DQN's on `observations`, simulated for T steps.

    `readout` picks the SNN readout ("spikes", "spikes+membrane", "membrane"; None: the SNN's own
    default). Observations are processed `batch_size` at a time. See the module doc for the measures.
    """
    if T < 1:
        raise ConfigError(f"T must be at least 1, got {T}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    obs = as_observation_array(observations, tuple(dqn.observation_shape))
    choice = {} if readout is None else {"readout": readout}
    q_parts, snn_parts = [], []
    for batch in obs.split(batch_size):
        q_parts.append(dqn.q_values(batch).cpu())
        snn_parts.append(torch.as_tensor(snn(batch, T=T, **choice)).cpu())
    return AgreementResult.from_values(
        torch.cat(q_parts), torch.cat(snn_parts),
        gap_threshold=gap_threshold, relative_gap_threshold=relative_gap_threshold,
    )


class AgreementRecorder:
    """`play(..., on_step=recorder)` hook: DQN-vs-SNN agreement on the states actually visited.

    Whoever plays (the SNN, the DQN, anything), at every step the recorder evaluates the DQN and the
    SNN on the batch of visited states and keeps their values (not the observations, so memory grows
    by 2 x n_actions floats per state). With the SNN playing this is the paper's conversion rate on
    SNN-visited states; with the DQN playing, agreement on DQN-visited states. The SNN is simulated
    once more per step here, on top of any simulation the playing policy does.
    """

    def __init__(
        self,
        dqn: DQNCheckpoint,
        snn: object,
        T: int,
        *,
        readouts: Sequence[str] | None = None,
        gap_threshold: float | None = None,
        relative_gap_threshold: float | None = None,
    ) -> None:
        if T < 1:
            raise ConfigError(f"T must be at least 1, got {T}")
        self.dqn, self.snn, self.T, self.readouts = dqn, snn, T, readouts
        self.gap_threshold, self.relative_gap_threshold = gap_threshold, relative_gap_threshold
        self._q: list[torch.Tensor] = []
        self._values: dict[str, list[torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, greedy_actions: np.ndarray, taken_actions: np.ndarray) -> None:
        """Record one vectorised step (returns None so that `play` never stops because of it)."""
        self._q.append(self.dqn.q_values(obs).cpu().float())
        for name, values in snn_readouts(self.snn, torch.as_tensor(obs), self.T, self.readouts).items():
            self._values.setdefault(name, []).append(values.detach().cpu().float())

    @property
    def n_states(self) -> int:
        """Number of states recorded so far."""
        return sum(len(q) for q in self._q)

    def results(self) -> dict[str, AgreementResult]:
        """Agreement per readout name over every state recorded so far."""
        if not self._q:
            raise ConfigError("the recorder has seen no state yet: pass it to play(..., on_step=recorder)")
        q_values = torch.cat(self._q)
        return {
            name: AgreementResult.from_values(
                q_values, torch.cat(parts),
                gap_threshold=self.gap_threshold, relative_gap_threshold=self.relative_gap_threshold,
            )
            for name, parts in self._values.items()
        }
