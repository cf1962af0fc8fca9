"""PNG plots of sweep and demo results (matplotlib, headless Agg backend).

The sweep rows are those of `report.sweep_rows` (columns `report.SWEEP_HEADERS`), so the
plots are drawn from exactly what `sweep.csv` holds. Each PNG goes through the one atomic writer
(`results.write_file`): a failed rerun (full disk, Ctrl-C) keeps the previous plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from dqn2snn_plugin.io.results import write_file  # noqa: E402


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
    _write(fig, path)


def _write(fig: plt.Figure, path: Path) -> None:
    """`fig` as a PNG at `path`, written whole or not at all; the figure is closed either way."""
    fig.tight_layout()
    try:
        write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
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


def plot_agreement_vs_latency(path: Path, lines: dict[str, Sequence[tuple[int, float]]], *, title: str) -> None:
    """Agreement with the DQN vs latency (time steps from observation to action), one line per conversion."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in lines.items():
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("latency (time steps from observation to action)")
    ax.set_ylabel("agreement with the DQN's action")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _write(fig, path)
