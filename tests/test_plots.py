"""The plots' data: each line drawn from its own column of the sweep rows (written by hand here, one
different number per cell), the DQN's level where it belongs; and the PNG files written."""

from __future__ import annotations

import matplotlib.pyplot as plt

from dqn2snn_plugin.experiments import plots

# columns as report.SWEEP_HEADERS: p, T, DQN score, SNN score, SNN std, SNN-visited (N+V), SNN-visited (spikes),
# held-out (N+V), held-out (spikes), spikes per decision
ROWS = [["99.9", 2, "9.00", "1.00", "0.10", "0.5000", "0.4000", "0.6000", "0.3000", "100"],
        ["99.9", 8, "9.00", "2.00", "0.20", "0.7000", "0.4500", "0.8000", "0.3500", "200"],
        ["max", 2, "9.00", "3.00", "0.30", "0.5500", "0.4200", "0.6500", "0.3200", "300"],
        ["max", 8, "9.00", "4.00", "0.40", "0.7500", "0.4700", "0.8500", "0.3700", "400"]]


def _drawn(monkeypatch) -> dict[str, dict[str, tuple[list, list]]]:
    """{file name: {line label: (x, y)}} of every figure the plots write, captured before saving."""
    figures = {}

    def capture(fig, path):
        figures[path.name] = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                              for line in fig.axes[0].get_lines()}
        plt.close(fig)

    monkeypatch.setattr(plots, "_write", capture)
    return figures


def test_each_sweep_line_is_drawn_from_its_own_column(monkeypatch, tmp_path):
    figures = _drawn(monkeypatch)
    plots.plot_sweep(tmp_path, ROWS, dqn_score=12.5)
    score = figures["score_vs_T.png"]
    assert score["SNN, p = 99.9"] == ([2, 8], [1.0, 2.0]) and score["SNN, p = max"] == ([2, 8], [3.0, 4.0])
    assert score["DQN"][1] == [12.5, 12.5]
    agreement = figures["agreement_vs_T.png"]
    assert agreement["p = 99.9, SNN-visited"] == ([2, 8], [0.5, 0.7])
    assert agreement["p = 99.9, held-out"] == ([2, 8], [0.6, 0.8])
    assert agreement["p = max, SNN-visited"] == ([2, 8], [0.55, 0.75])
    assert agreement["p = max, held-out"] == ([2, 8], [0.65, 0.85])


def test_agreement_vs_latency_draws_each_conversions_points(monkeypatch, tmp_path):
    figures = _drawn(monkeypatch)
    plots.plot_agreement_vs_latency(tmp_path / "a.png", {"rate": [(10, 0.5), (40, 0.7)], "binary": [(20, 0.9)]},
                                    title="t")
    assert figures["a.png"] == {"rate": ([10, 40], [0.5, 0.7]), "binary": ([20], [0.9])}


def test_the_sweep_plots_are_written_as_png(tmp_path):
    plots.plot_sweep(tmp_path, ROWS, dqn_score=12.5)
    for name in ("score_vs_T.png", "agreement_vs_T.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
