"""`dqn2snn demo`: the paper's conversion and our best training-free one, side by side on one DQN.

Both SNNs are converted from the same calibration states (the DQN's own play, in episodes separate
from the measured games) and measured the same way: agreement with the DQN's greedy action on
held-out DQN-visited states and on the states the SNN visits while playing, the game score,
synaptic operations and energy per decision (over the states it visits, next to the int8 and fp32
DQN's: `costs`, docs/costs.md), and latency, the time steps from observation to action:
- rate coding (the paper): every layer runs at once for T steps, so the latency is T;
- binary coding: each layer needs its whole T-bit input code before it can send its own, so the
  latency is T per weighted layer (T to integrate the observation, then T per spiking layer):
  5 T for the Nature CNN's 3 convolutions and 2 linear layers. `latency_steps` counts the layers.
By default the paper's row runs at the binary row's latency, so the two compare at equal delay.

The shipped Breakout fixture DQN is too weak for its score to say anything (it scores about 1 in
short games), so the demo also converts a competent MinAtar agent shipped with the package
(`run_minatar_demo`: MinAtar Breakout, trained by benchmarks/train_minatar.py) and plays enough
whole games per player (30 by default) for a score comparison with 95% confidence intervals
(`report.demo_scores_table`). MinAtar observations are 0/1 planes: the SNN's input is already spikes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from dqn2snn_plugin.binary_coding import check_bits
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.errors import ResultsError
from dqn2snn_plugin.experiments.evaluation import (
    calibration_and_heldout_states, header, heldout_agreement, load_checked, play_dqn, play_snn,
)
from dqn2snn_plugin.experiments.records import Conversion, CurvePoint, DemoResult, DemoRow
from dqn2snn_plugin.experiments.report import DEMO_READOUT, demo_scores_table, demo_table
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.io.results import check_output_dir, write_folder, write_json, write_text
from dqn2snn_plugin.normalization import SYNAPSES
from dqn2snn_plugin.coding import check_T
from dqn2snn_plugin.network import SpikingQNetwork


def latency_steps(snn: SpikingQNetwork, T: int) -> int:
    """Time steps from observation to action: T for rate coding, T per weighted layer for binary coding."""
    return snn.coding.latency(T, len(snn.synapses))


def conversions(bits: int, rate_T: int | None, n_weighted_layers: int) -> list[Conversion]:
    """The paper's method and ours; the paper's T defaults to our latency (bits * layers)."""
    bits = check_bits(check_T(bits))
    curve_bits = tuple(sorted({*range(2, bits + 1, 2), bits}))
    rate_T = check_T(rate_T or bits * n_weighted_layers)
    rate_curve = tuple(sorted({b * n_weighted_layers for b in curve_bits} | {rate_T}))
    return [
        Conversion(f"paper's method: rate coding, N+V readout, p = 99.9, T = {rate_T}", "rate", rate_T, 99.9, False,
                   rate_curve),
        Conversion(f"ours, training-free: binary coding, {bits}-bit codes, p = 99.99, per-channel scales", "binary",
                   bits, 99.99, True, curve_bits),
    ]


def _measure(checkpoint: DQNCheckpoint, row: Conversion, calibration: np.ndarray, test: np.ndarray,
             settings: RunSettings) -> DemoRow:
    snn = convert(checkpoint, calibration, percentile=row.percentile, channel_wise=row.channel_wise,
                  backend=settings.backend, readout=DEMO_READOUT, T=row.T, coding=row.coding)
    curve = heldout_agreement(checkpoint, snn, test, list(row.curve_T))
    played = play_snn(checkpoint, snn, row.T, dataclasses.replace(settings, readout=DEMO_READOUT))
    return DemoRow(row, latency_steps(snn, row.T),
                   [CurvePoint(T, latency_steps(snn, T), curve[T][DEMO_READOUT].rate) for T in row.curve_T],
                   played, snn.scales.as_dict())


DEMO_FILES = ("result.json", "demo.md", "scores.md", "agreement_vs_latency.png")  # what `run_demo` writes, as one folder


def run_demo(checkpoint: DQNCheckpoint, settings: RunSettings, out_dir: str | Path, *, bits: int = 8,
             rate_T: int | None = None, test_frames: int = 128) -> DemoResult:
    """Measure both conversions; write `DEMO_FILES` (the tables, with the score comparison and its 95%
    intervals in `scores.md`, the JSON and the plot) into `out_dir` as a whole (`results.write_folder`),
    which is checked before any work and made only at the end."""
    from dqn2snn_plugin.experiments.plots import plot_agreement_vs_latency

    check_output_dir(out_dir)
    rows = conversions(bits, rate_T, sum(isinstance(layer, SYNAPSES) for layer in checkpoint.q_network))
    calibration, test, calibration_draw, test_draw = calibration_and_heldout_states(checkpoint, settings, test_frames)
    dqn_score, _ = play_dqn(checkpoint, settings)
    result = DemoResult(header(checkpoint, settings), dqn_score, test_frames,
                        [_measure(checkpoint, row, calibration, test, settings) for row in rows],
                        calibration_draw, test_draw)

    def write(folder: Path) -> None:
        write_json(folder / "result.json", result.to_json())
        write_text(folder / "demo.md", demo_table(result) + "\n")
        write_text(folder / "scores.md", demo_scores_table(result) + "\n")
        plot_agreement_vs_latency(folder / "agreement_vs_latency.png", {
            row.conversion.label: [(point.latency_steps, point.agreement) for point in row.heldout]
            for row in result.conversions
        }, title=f"{checkpoint.env_id}: agreement with the DQN on {test_frames} held-out states")

    write_folder(out_dir, write, replaces=DEMO_FILES)
    return result


def find_demo_checkpoint() -> Path:
    """The Breakout DQN shipped inside the package (a copy of the shared fixture
    `atari-dqn/BreakoutNoFrameskip-v4.qnet.pt`: SB3 QNetwork weights, about 234k agent steps of training)."""
    path = Path(__file__).resolve().parent.parent / "data" / "BreakoutNoFrameskip-v4.qnet.pt"
    if not path.is_file():
        raise ResultsError(f"the shipped demo checkpoint {path} is missing (broken install?): pass --checkpoint")
    return path


MINATAR_GAME = "Breakout"  # the shipped MinAtar agent the demo converts: short games, a wide score spread
MINATAR_MAX_STEPS = 10_000  # no MinAtar Breakout game comes near it (train_log.json: mean length 54)


def find_minatar_checkpoint(game: str = MINATAR_GAME) -> Path:
    """A competent MinAtar DQN shipped inside the package (data/minatar, benchmarks/train_minatar.py)."""
    path = Path(__file__).resolve().parent.parent / "data" / "minatar" / f"dqn-MinAtar-{game}-v1.zip"
    if not path.is_file():
        raise ResultsError(f"the shipped MinAtar checkpoint {path} is missing (broken install?)")
    return path


def run_minatar_demo(settings: RunSettings, out_dir: str | Path, *, games: int = 30, bits: int = 8,
                     rate_T: int | None = None, test_frames: int = 128, device: str = "cpu") -> DemoResult:
    """`run_demo` on the shipped MinAtar agent with `games` whole games per player, its own game and
    protocol (those of `settings` are the Atari part's); the seed, backend, n_envs and calibration
    frames are `settings`'."""
    checkpoint = load_checked(find_minatar_checkpoint(), device=device)
    minatar = dataclasses.replace(settings, episodes=games, max_steps=MINATAR_MAX_STEPS, env_id=None, protocol=None,
                                  input_scale=None)
    return run_demo(checkpoint, minatar, out_dir, bits=bits, rate_T=rate_T, test_frames=test_frames)
