"""The printed and written tables of `evaluate`, `sweep`, `benchmark` and `demo`, from typed records.

One place for how numbers are shown: `pct` (a rate as a percentage, "n/a" when absent), `score`
(mean ± std), `mean_ci` and `interval` (95% intervals, `confidence`), `p_label` (99.9, or "max"
for 100) and `energy_cells` (the SNN's energy per decision in µJ, its ratio to the int8 DQN's and
whether it is cheaper: the same three columns in every table). The plots are in `plots`, drawn from the
same rows.
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
from dqn2snn_plugin.energy import CostComparison
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


# ---------------------------------------------------------------- energy per decision (costs, docs/costs.md)

ENERGY_HEADERS = ["energy per decision (µJ)", "÷ int8 DQN", "cheaper than int8 DQN"]
DQN_ENERGY_HEADER = "DQN energy per decision (µJ)"  # in tables with one row per SNN (sweep, benchmark)


def microjoules(pj: float) -> str:
    """An energy in pJ as µJ: three significant digits, whole µJ from 100 on ("23.6", "1,686")."""
    uj = pj / 1e6
    return f"{uj:,.0f}" if uj >= 100 else f"{uj:.3g}"


def energy_cells(cost: CostComparison | None) -> list[str]:
    """The SNN's energy per decision (µJ), its ratio to the int8 DQN's and "yes"/"no" for cheaper
    (columns ENERGY_HEADERS); "n/a" for a record written before costs were recorded."""
    if cost is None:
        return ["n/a"] * len(ENERGY_HEADERS)
    return [microjoules(cost.snn.energy_pj), f"{cost.ratio_int8:.3g}", "yes" if cost.cheaper else "no"]


def dqn_energy(cost: CostComparison | None) -> str:
    """The DQN's energy per decision in both precisions: "int8 23.6, fp32 130" (µJ)."""
    if cost is None:
        return "n/a"
    return f"int8 {microjoules(cost.dqn_int8.energy_pj)}, fp32 {microjoules(cost.dqn_fp32.energy_pj)}"


_WEIGHT_READS = {"per_event": "per event", "per_decision": "once per decision",
                 "least": "per event or once per decision, whichever is less for each layer"}


def energy_note(cost: CostComparison) -> str:
    """What the energies assume: the table, the SNN's precision and weight reads, how many decisions."""
    s = cost.snn.settings
    return (f"energy per decision under {cost.table.name} (constants and sources in the result's JSON; "
            f"docs/costs.md): SNN priced in {s['precision']}, weights read "
            f"{_WEIGHT_READS.get(s['weight_reads'], s['weight_reads'])}, "
            f"mean over {s['decisions']:,} decisions; the DQN with each weight read once")


# ---------------------------------------------------------------- evaluate


def format_evaluation(result: Evaluation) -> str:
    """The printed table of `evaluate`: one row per player, agreement per readout on its states."""
    s, snn = result.header.settings, result.snn
    rows = []
    for who, summary, agreement, energy in (
            ("DQN plays", result.dqn_score, result.agreement_dqn_visited, [dqn_energy(snn.cost), "", ""]),
            ("SNN plays", snn.score, snn.agreement_snn_visited, energy_cells(snn.cost))):
        rows.append([who, score(summary), *(pct(agreement[r].rate) for r in AGREEMENT_READOUTS),
                     agreement[AGREEMENT_READOUTS[0]].n_states, *energy])
    coding = s.get("coding", "rate")
    steps = f"T={result.T}" + check_coding(coding).T_note
    title = (f"{result.header.env_id}  {steps}  p={p_label(result.percentile)}"
             f"{'  per channel' * s.get('channel_wise', False)}  "
             f"{s['episodes']} episodes (ε={s['epsilon']}, ≤{s['max_steps']} steps)  SNN acts on {s['readout']}")
    table = markdown_table(["", "score (mean ± std)", *(f"agreement {r}" for r in AGREEMENT_READOUTS), "states",
                            *ENERGY_HEADERS], rows)
    counts = (f"spikes per decision: {snn.spikes_per_decision:,.0f}   "
              f"synaptic ops per decision: {snn.synaptic_ops_per_decision:,.0f}")
    if snn.cost is None:
        return f"{title}\n{table}\n{counts}"
    cost = snn.cost
    energies = (f"energy per decision: SNN {microjoules(cost.snn.energy_pj)} µJ, int8 DQN "
                f"{microjoules(cost.dqn_int8.energy_pj)} µJ, fp32 DQN {microjoules(cost.dqn_fp32.energy_pj)} µJ; "
                f"SNN ÷ int8 DQN = {cost.ratio_int8:.3g}, SNN ÷ fp32 DQN = {cost.ratio_fp32:.3g}: the SNN is "
                f"{'' if cost.cheaper else 'not '}cheaper than the int8 DQN")
    return f"{title}\n{table}\n{counts}\n\n{cost.snn.markdown()}\n\n{energies}\n{energy_note(cost)}"


# ---------------------------------------------------------------- sweep

SWEEP_HEADERS = ["percentile", "T", "DQN score", "SNN score", "SNN std",
                 "agreement SNN-visited (N+V)", "agreement SNN-visited (spikes)",
                 "agreement held-out (N+V)", "agreement held-out (spikes)", "spikes per decision", *ENERGY_HEADERS,
                 DQN_ENERGY_HEADER]


def sweep_rows(dqn: ScoreSummary, cells: Iterable[SweepCell]) -> list[list[object]]:
    """One row per cell, ordered by p then T (columns SWEEP_HEADERS; `plots.plot_sweep` reads them)."""
    return [[p_label(cell.percentile), cell.T, f"{dqn.mean:.2f}", f"{cell.snn.score.mean:.2f}",
             f"{cell.snn.score.std:.2f}",
             *(f"{cell.snn.agreement_snn_visited[r].rate:.4f}" for r in AGREEMENT_READOUTS),
             *(f"{cell.agreement_heldout[r].rate:.4f}" for r in AGREEMENT_READOUTS),
             f"{cell.snn.spikes_per_decision:.0f}", *energy_cells(cell.snn.cost), dqn_energy(cell.snn.cost)]
            for cell in sorted(cells, key=lambda c: (c.percentile, c.T))]


# ---------------------------------------------------------------- benchmark

BENCHMARK_HEADERS = ["game", "coding", "T", "p", "scales", "DQN score", "SNN score", "agreement SNN-visited (N+V)",
                     "agreement DQN-visited (N+V)", "agreement SNN-visited (spikes)", "agreement DQN-visited (spikes)",
                     "spikes per decision", "synaptic ops per decision", *ENERGY_HEADERS, DQN_ENERGY_HEADER,
                     "cell wall (s)"]


def benchmark_row(cell: BenchmarkCell) -> list[object]:
    """One table row of a benchmark cell (columns BENCHMARK_HEADERS)."""
    ev = cell.evaluation
    rates = []
    for r in AGREEMENT_READOUTS:
        rates += [pct(ev.snn.agreement_snn_visited[r].rate), pct(ev.agreement_dqn_visited[r].rate)]
    return [ev.header.env_id.removesuffix("NoFrameskip-v4"), cell.coding, ev.T, p_label(ev.percentile),
            "per channel" if cell.channel_wise else "per layer", score(ev.dqn_score), score(ev.snn.score), *rates,
            f"{ev.snn.spikes_per_decision:,.0f}", f"{ev.snn.synaptic_ops_per_decision:,.0f}",
            *energy_cells(ev.snn.cost), dqn_energy(ev.snn.cost), f"{cell.wall_s:.0f}"]


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
                "synaptic ops per decision", "latency (time steps)", *ENERGY_HEADERS]


def _demo_cost(result: DemoResult) -> CostComparison | None:
    """The DQN's side of the energy columns (every row holds the same DQN costs), None in older results."""
    return next((row.snn.cost for row in result.conversions if row.snn.cost is not None), None)


def _demo_energy_note(result: DemoResult) -> str:
    cost = _demo_cost(result)
    return "" if cost is None else f"\n{energy_note(cost)}"


def demo_table(result: DemoResult) -> str:
    """The demo's table: the DQN (its energy per decision in int8 and fp32), then one row per conversion
    (its energy per decision, ÷ the int8 DQN's, cheaper), and what the energies assume."""
    rows = [["DQN (the network converted)", "", "", score(result.dqn_score), "", "", dqn_energy(_demo_cost(result)),
             "", ""]]
    for row in result.conversions:
        heldout = next(point.agreement for point in row.heldout if point.T == row.conversion.T)
        rows.append([row.conversion.label, pct(heldout), pct(row.snn.agreement_snn_visited[DEMO_READOUT].rate),
                     score(row.snn.score), f"{row.snn.synaptic_ops_per_decision:,.0f}", row.latency_steps,
                     *energy_cells(row.snn.cost)])
    return markdown_table(DEMO_HEADERS, rows) + _demo_energy_note(result)


DEMO_SCORE_HEADERS = ["", "score (mean ± 95% CI)", "SNN − DQN (95% CI)", "same score", "agreement while playing",
                      "synaptic ops per decision", "latency (time steps)", *ENERGY_HEADERS]


def demo_scores_table(result: DemoResult) -> str:
    """The demo's score comparison: the DQN, then each conversion with the 95% interval of its
    difference from the DQN (`confidence`), for games long and many enough to tell scores apart, and
    the energy columns of `demo_table`."""
    rows = [["DQN (the network converted)", mean_ci(result.dqn_score), "", "", "", "", "",
             dqn_energy(_demo_cost(result)), "", ""]]
    for row in result.conversions:
        rows.append([row.conversion.label, *compared(row.snn.score, result.dqn_score),
                     pct(row.snn.agreement_snn_visited[DEMO_READOUT].rate),
                     f"{row.snn.synaptic_ops_per_decision:,.0f}", row.latency_steps, *energy_cells(row.snn.cost)])
    return markdown_table(DEMO_SCORE_HEADERS, rows) + f"\n{METHOD}; {SAME_SCORE}" + _demo_energy_note(result)
