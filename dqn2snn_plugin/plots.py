"""PNG plots of sweep and demo results (matplotlib, headless Agg backend).

The sweep rows are those of `sweep.sweep_rows` (columns `sweep.SWEEP_HEADERS`), so the
plots are drawn from exactly what `sweep.csv` holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def _by_percentile(rows: Sequence[Sequence[object]], column: int) -> dict[str, tuple[list[int], list[float]]]:
    """{percentile label: (Ts, values of `column`)} from sweep rows (column 0 = p, 1 = T)."""
    lines: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        Ts, values = lines.setdefault(str(row[0]), ([], []))
        Ts.append(int(row[1]))
        values.append(float(row[column]))
    return lines


def _save(fig: plt.Figure, ax: plt.Axes, path: Path, ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("T (time steps per decision)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(directory: Path, rows: Sequence[Sequence[object]], *, dqn_score: float) -> None:
    """`score_vs_T.png` and `agreement_vs_T.png`: one line per percentile, the DQN's score as a level."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (Ts, scores) in _by_percentile(rows, 3).items():
        ax.plot(Ts, scores, marker="o", label=f"SNN, p = {label}")
    ax.axhline(dqn_score, color="black", linestyle="--", label="DQN")
    _save(fig, ax, directory / "score_vs_T.png", "mean score", "Score vs T")

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (Ts, rates) in _by_percentile(rows, 5).items():
        line, = ax.plot(Ts, rates, marker="o", label=f"p = {label}, SNN-visited")
        ax.plot(Ts, _by_percentile(rows, 7)[label][1], marker="x", linestyle=":", color=line.get_color(),
                label=f"p = {label}, held-out")
    ax.set_ylim(0, 1.02)
    _save(fig, ax, directory / "agreement_vs_T.png", "agreement with DQN (N+V readout)", "Conversion rate vs T")


def plot_heldout(path: Path, rows: Sequence[Sequence[float]], readouts: Sequence[str], *, title: str) -> None:
    """Agreement on held-out states vs T, one line per readout (rows: T, rate per readout)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    Ts = [row[0] for row in rows]
    for index, readout in enumerate(readouts, start=1):
        ax.plot(Ts, [row[index] for row in rows], marker="o", label=readout)
    ax.set_ylim(0, 1.02)
    _save(fig, ax, path, "agreement with DQN (held-out states)", title)
