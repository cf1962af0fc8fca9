"""`dqn2snn sweep`: a grid of (percentile, T) cells, each saved the moment it finishes, resumable.

Every finished cell is appended to `DIR/cells.jsonl` (flush + fsync), so an interrupted sweep
resumes where it stopped and no cell is computed twice; `DIR/config.json` pins what decides the
results, and a rerun with other settings is refused (ResultsError) rather than mixed in. The
DQN-visited agreement of a sweep is measured on a fixed held-out state set (episodes separate from
the calibration episodes), for all T of a percentile in one simulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.errors import ConfigError, ResultsError
from dqn2snn_plugin.experiments.evaluation import (
    AGREEMENT_READOUTS, RunSettings, _header, check_grid, heldout_agreement, p_label, play_dqn, play_snn,
)
from dqn2snn_plugin.io.results import CellLog, write_table
from dqn2snn_plugin.network import SpikingQNetwork

SWEEP_FORMAT = "dqn2snn-sweep-v1"


def run_cell(checkpoint: DQNCheckpoint, snn: SpikingQNetwork, p: float, T: int, settings: RunSettings,
             heldout: dict) -> dict:
    """One sweep cell: SNN games at T (score, SNN-visited agreement, cost) plus the held-out agreement."""
    return {"kind": "cell", "percentile": p, "T": T, **play_snn(checkpoint, snn, T, settings),
            "agreement_heldout": heldout}


SWEEP_HEADERS = ["percentile", "T", "DQN score", "SNN score", "SNN std",
                 "agreement SNN-visited (N+V)", "agreement SNN-visited (spikes)",
                 "agreement held-out (N+V)", "agreement held-out (spikes)", "spikes per decision"]


def sweep_rows(log: CellLog) -> list[list[object]]:
    """One table row per finished (p, T) cell in the log, ordered by p then T: a rerun on part of
    the grid keeps the other cells in the table. ResultsError when a record lacks what a row needs."""
    try:
        dqn = log.find("dqn")["score"]["mean"]
        cells = sorted((r for r in log.records if r["kind"] == "cell"), key=lambda r: (r["percentile"], r["T"]))
        return [[p_label(cell["percentile"]), cell["T"], f"{dqn:.2f}", f"{cell['score']['mean']:.2f}",
                 f"{cell['score']['std']:.2f}",
                 *(f"{cell['agreement_snn_visited'][r]['rate']:.4f}" for r in AGREEMENT_READOUTS),
                 *(f"{cell['agreement_heldout'][r]['rate']:.4f}" for r in AGREEMENT_READOUTS),
                 f"{cell['spikes_per_decision']:.0f}"] for cell in cells]
    except (KeyError, TypeError) as exc:
        raise ResultsError(f"{log.cells_path}: a record lacks {exc} or holds the wrong type (edited or damaged): "
                           "delete that line (its cell is measured again) or the folder") from None


def sweep(checkpoint: DQNCheckpoint, Ts: Sequence[int], percentiles: Sequence[float | str], settings: RunSettings,
          out_dir: str | Path, *, test_frames: int = 1000) -> list[list[object]]:
    """Measure every (p, T) cell, resuming from `out_dir`; write sweep.csv/.md and the plots of every cell
    measured there so far (this grid and earlier ones); return the rows."""
    from dqn2snn_plugin.experiments.plots import plot_sweep

    Ts, ps = check_grid(Ts, percentiles, settings.coding)
    settings.check()
    if test_frames < 1:
        raise ConfigError(f"test-frames must be at least 1, got {test_frames}")
    config = {"format": SWEEP_FORMAT, **_header(checkpoint, settings), "test_frames": test_frames}
    config.pop("checkpoint")  # where the file lies does not matter, its weights do
    log = CellLog(Path(out_dir), config)
    if log.find("dqn") is not None:
        sweep_rows(log)  # a damaged record is refused now, not after the new cells
    else:
        log.append({"kind": "dqn", "score": play_dqn(checkpoint, settings)[0]})
    todo = {p: [T for T in Ts if log.find("cell", percentile=p, T=T) is None] for p in ps}
    if any(todo.values()):
        calibration, test = calibration_and_test_observations(
            checkpoint, settings.calibration_frames, test_frames, seed=settings.seed, epsilon=settings.epsilon,
            n_envs=settings.n_envs, progress=True)
        total = len(Ts) * len(ps)
        with tqdm(total=total, initial=total - sum(map(len, todo.values())), desc="sweep cells", unit="cell") as bar:
            for p, cell_Ts in todo.items():
                if not cell_Ts:
                    continue
                snn = convert(checkpoint, calibration, percentile=p, backend=settings.backend, readout=settings.readout,
                              coding=settings.coding, channel_wise=settings.channel_wise)
                heldout = heldout_agreement(checkpoint, snn, test, cell_Ts)
                for T in cell_Ts:
                    log.append(run_cell(checkpoint, snn, p, T, settings, heldout[T]))
                    bar.update(1)
    rows = sweep_rows(log)
    write_table(log.directory, "sweep", SWEEP_HEADERS, rows)
    plot_sweep(log.directory, rows, dqn_score=log.find("dqn")["score"]["mean"])
    return rows
