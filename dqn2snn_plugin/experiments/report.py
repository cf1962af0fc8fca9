"""The printed and written tables of `evaluate`, `sweep`, `benchmark` and `demo`, from typed records.

One place for how numbers are shown: `pct` (a rate as a percentage, "n/a" when absent), `score`
(mean ± std), `mean_ci` and `interval` (95% intervals, `confidence`) and `p_label` (99.9, or "max"
for 100). The plots are in `plots`, drawn from the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dqn2snn_plugin.experiments.confidence import (
    METHOD, Interval, difference_interval, indistinguishable, mean_interval,
)
from dqn2snn_plugin.experiments.records import (
    AGREEMENT_READOUTS, BenchmarkCell, DemoResult, Evaluation, ScoreSummary, SweepCell,
)
from dqn2snn_plugin.coding import check_coding
from dqn2snn_plugin.io.results import markdown_table


def p_label(p: float) -> str:
    """A percentile as people write it: 99.9, or "max" for 100."""
    return "max" if p == 100.0 else f"{p:g}"


def pct(x: float | None) -> str:
    """A rate in [0, 1] as a percentage with one decimal; "n/a" for None."""
    return "n/a" if x is None else f"{100 * x:.1f}%"


def score(summary: ScoreSummary) -> str:
    """mean ± std of the raw game scores."""
    return f"{summary.mean:.1f} ± {summary.std:.1f}"


def _number(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 100 else f"{x:,.0f}"


def mean_ci(summary: ScoreSummary) -> str:
    """The mean score ± the half-width of its 95% interval, and the number of games: "4.41 ± 0.61 (n=100)"."""
    ci = mean_interval(summary.scores)
    spread = "n/a" if ci.low is None else _number((ci.high - ci.low) / 2)
    return f"{_number(ci.estimate)} ± {spread} (n={len(summary.scores)})"


def interval(ci: Interval) -> str:
    """An interval as [low, high] (n/a with fewer than two scores a side)."""
    return "n/a" if ci.low is None else f"[{_number(ci.low)}, {_number(ci.high)}]"


# ---------------------------------------------------------------- evaluate


def format_evaluation(result: Evaluation) -> str:
    """The printed table of `evaluate`: one row per player, agreement per readout on its states."""
    s, snn = result.header.settings, result.snn
    rows = []
    for who, summary, agreement in (("DQN plays", result.dqn_score, result.agreement_dqn_visited),
                                    ("SNN plays", snn.score, snn.agreement_snn_visited)):
        rows.append([who, score(summary), *(pct(agreement[r].rate) for r in AGREEMENT_READOUTS),
                     agreement[AGREEMENT_READOUTS[0]].n_states])
    coding = s.get("coding", "rate")
    steps = f"T={result.T}" + check_coding(coding).T_note
    title = (f"{result.header.env_id}  {steps}  p={p_label(result.percentile)}"
             f"{'  per channel' * s.get('channel_wise', False)}  "
             f"{s['episodes']} episodes (ε={s['epsilon']}, ≤{s['max_steps']} steps)  SNN acts on {s['readout']}")
    table = markdown_table(["", "score (mean ± std)", *(f"agreement {r}" for r in AGREEMENT_READOUTS), "states"],
                           rows)
    cost = (f"spikes per decision: {snn.spikes_per_decision:,.0f}   "
            f"synaptic ops per decision: {snn.synaptic_ops_per_decision:,.0f}")
    return f"{title}\n{table}\n{cost}"


# ---------------------------------------------------------------- sweep

SWEEP_HEADERS = ["percentile", "T", "DQN score", "SNN score", "SNN std",
                 "agreement SNN-visited (N+V)", "agreement SNN-visited (spikes)",
                 "agreement held-out (N+V)", "agreement held-out (spikes)", "spikes per decision"]


def sweep_rows(dqn: ScoreSummary, cells: Iterable[SweepCell]) -> list[list[object]]:
    """One row per cell, ordered by p then T (columns SWEEP_HEADERS; `plots.plot_sweep` reads them)."""
    return [[p_label(cell.percentile), cell.T, f"{dqn.mean:.2f}", f"{cell.snn.score.mean:.2f}",
             f"{cell.snn.score.std:.2f}",
             *(f"{cell.snn.agreement_snn_visited[r].rate:.4f}" for r in AGREEMENT_READOUTS),
             *(f"{cell.agreement_heldout[r].rate:.4f}" for r in AGREEMENT_READOUTS),
             f"{cell.snn.spikes_per_decision:.0f}"]
            for cell in sorted(cells, key=lambda c: (c.percentile, c.T))]


# ---------------------------------------------------------------- benchmark

BENCHMARK_HEADERS = ["game", "coding", "T", "p", "scales", "DQN score", "SNN score", "agreement SNN-visited (N+V)",
                     "agreement DQN-visited (N+V)", "agreement SNN-visited (spikes)", "agreement DQN-visited (spikes)",
                     "spikes per decision", "synaptic ops per decision", "cell wall (s)"]


def benchmark_row(cell: BenchmarkCell) -> list[object]:
    """One table row of a benchmark cell (columns BENCHMARK_HEADERS)."""
    ev = cell.evaluation
    rates = []
    for r in AGREEMENT_READOUTS:
        rates += [pct(ev.snn.agreement_snn_visited[r].rate), pct(ev.agreement_dqn_visited[r].rate)]
    return [ev.header.env_id.removesuffix("NoFrameskip-v4"), cell.coding, ev.T, p_label(ev.percentile),
            "per channel" if cell.channel_wise else "per layer", score(ev.dqn_score), score(ev.snn.score), *rates,
            f"{ev.snn.spikes_per_decision:,.0f}", f"{ev.snn.synaptic_ops_per_decision:,.0f}", f"{cell.wall_s:.0f}"]


def benchmark_table(rows: Sequence[Sequence[object]]) -> str:
    return markdown_table(BENCHMARK_HEADERS, rows)


# The benchmark's score comparison, DIR/scores.{md,csv,json}: does the SNN keep the DQN's score?
SCORE_HEADERS = ["game", "setting", "DQN score (mean ± 95% CI)", "SNN score (mean ± 95% CI)",
                 "SNN − DQN (95% CI)", "same score", "agreement SNN-visited (N+V)", "agreement DQN-visited (N+V)",
                 "synaptic ops per decision"]
SAME_SCORE = "same score: the difference's 95% interval contains 0, or the mean difference is within 5% of the DQN's"


def setting_label(coding: str, T: int, percentile: float, channel_wise: bool) -> str:
    """A benchmark setting in words: "binary T=8 p=99.99 per channel"."""
    return f"{coding} T={T} p={p_label(percentile)}" + " per channel" * channel_wise


def compared(snn: ScoreSummary, dqn: ScoreSummary) -> list[str]:
    """The SNN's score against the DQN's: its mean with 95% interval, the difference's interval, same score."""
    return [mean_ci(snn), interval(difference_interval(snn.scores, dqn.scores)),
            "yes" if indistinguishable(snn.scores, dqn.scores) else "no"]


def score_row(cell: BenchmarkCell) -> list[object]:
    """One row of the score comparison (columns SCORE_HEADERS)."""
    ev, readout = cell.evaluation, AGREEMENT_READOUTS[0]
    return [ev.header.env_id.removesuffix("NoFrameskip-v4"),
            setting_label(cell.coding, ev.T, ev.percentile, cell.channel_wise), mean_ci(ev.dqn_score),
            *compared(ev.snn.score, ev.dqn_score), pct(ev.snn.agreement_snn_visited[readout].rate),
            pct(ev.agreement_dqn_visited[readout].rate), f"{ev.snn.synaptic_ops_per_decision:,.0f}"]


def score_record(cell: BenchmarkCell) -> dict:
    """The score comparison of one cell as JSON: both means and their difference with 95% intervals."""
    ev = cell.evaluation
    dqn, snn = ev.dqn_score.scores, ev.snn.score.scores
    return {"game": ev.header.env_id, "checkpoint_sha": ev.header.checkpoint_sha, "coding": cell.coding, "T": ev.T,
            "percentile": ev.percentile, "channel_wise": cell.channel_wise, "episodes": [len(dqn), len(snn)],
            "dqn": mean_interval(dqn).to_json(), "snn": mean_interval(snn).to_json(),
            "snn_minus_dqn": difference_interval(snn, dqn).to_json(), "same_score": indistinguishable(snn, dqn)}


def scores_table(cells: Iterable[BenchmarkCell]) -> str:
    return markdown_table(SCORE_HEADERS, [score_row(cell) for cell in cells]) + f"\n{METHOD}; {SAME_SCORE}"


# ---------------------------------------------------------------- demo

DEMO_READOUT = "spikes+membrane"  # the paper's N + V readout, the one both demo rows are measured on
DEMO_HEADERS = ["", "held-out agreement", "agreement while playing", "score (mean ± std)",
                "synaptic ops per decision", "latency (time steps)"]


def demo_table(result: DemoResult) -> str:
    """The demo's table: the DQN, then one row per conversion."""
    rows = [["DQN (the network converted)", "", "", score(result.dqn_score), "", ""]]
    for row in result.conversions:
        heldout = next(point.agreement for point in row.heldout if point.T == row.conversion.T)
        rows.append([row.conversion.label, pct(heldout), pct(row.snn.agreement_snn_visited[DEMO_READOUT].rate),
                     score(row.snn.score), f"{row.snn.synaptic_ops_per_decision:,.0f}", row.latency_steps])
    return markdown_table(DEMO_HEADERS, rows)


DEMO_SCORE_HEADERS = ["", "score (mean ± 95% CI)", "SNN − DQN (95% CI)", "same score", "agreement while playing",
                      "synaptic ops per decision", "latency (time steps)"]


def demo_scores_table(result: DemoResult) -> str:
    """The demo's score comparison: the DQN, then each conversion with the 95% interval of its
    difference from the DQN (`confidence`), for games long and many enough to tell scores apart."""
    rows = [["DQN (the network converted)", mean_ci(result.dqn_score), "", "", "", "", ""]]
    for row in result.conversions:
        rows.append([row.conversion.label, *compared(row.snn.score, result.dqn_score),
                     pct(row.snn.agreement_snn_visited[DEMO_READOUT].rate),
                     f"{row.snn.synaptic_ops_per_decision:,.0f}", row.latency_steps])
    return markdown_table(DEMO_SCORE_HEADERS, rows) + f"\n{METHOD}; {SAME_SCORE}"
