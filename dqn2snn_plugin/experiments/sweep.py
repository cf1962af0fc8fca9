"""`dqn2snn sweep`: a grid of (percentile, T) cells on one DQN, each saved the moment it finishes, resumable.

The cells run on `runner.CellRunner` over `DIR/cells.jsonl`, so an interrupted sweep resumes where it
stopped and no cell is computed twice; `DIR/config.json` pins what decides the results (the settings,
the weights' digest, how the calibration and held-out states were drawn), and a rerun with other
values is refused (ResultsError) rather than mixed in. The DQN-visited agreement of a sweep is
measured on a fixed held-out state set, for all T of a percentile in one simulation; calibration
and held-out states come from episodes separate from the measured games (`evaluation.calibration_draws`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from pathlib import Path

from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.errors import ConfigError
from dqn2snn_plugin.experiments.evaluation import (
    calibration_and_heldout_states, calibration_draws, check_grid, check_memory, header, heldout_agreement, play_dqn,
    play_snn,
)
from dqn2snn_plugin.experiments.records import Agreements, DqnBaseline, SweepCell
from dqn2snn_plugin.experiments.report import SWEEP_HEADERS, sweep_rows
from dqn2snn_plugin.experiments.runner import KIND, CellRunner
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.io.results import CellLog, write_table
from dqn2snn_plugin.network import SpikingQNetwork

SWEEP_FORMAT = "dqn2snn-sweep-v1"


def run_cell(checkpoint: DQNCheckpoint, snn: SpikingQNetwork, p: float, T: int, settings: RunSettings,
             heldout: Agreements) -> SweepCell:
    """One sweep cell: SNN games at T (score, SNN-visited agreement, cost) plus the held-out agreement."""
    return SweepCell(p, T, play_snn(checkpoint, snn, T, settings), heldout)


def sweep_config(checkpoint: DQNCheckpoint, settings: RunSettings, test_frames: int) -> dict:
    """What `config.json` pins: the settings, the weights (not where the file lies) and the state draws."""
    calibration, heldout = calibration_draws(settings, test_frames)
    config = {"format": SWEEP_FORMAT, **header(checkpoint, settings).to_json(), "test_frames": test_frames,
              "calibration_states": calibration.to_json(), "heldout_states": heldout.to_json()}
    del config["checkpoint"]
    return config


def logged_rows(log: CellLog) -> list[list[object]]:
    """One table row per finished (p, T) cell in the log, ordered by p then T: a rerun on part of the
    grid keeps the other cells in the table; a cell logged twice (by two runs at once, before folders
    were locked) is one row, its first record, as `CellRunner` reads it. ResultsError when a record
    lacks what a row needs."""
    dqn = log.parse(DqnBaseline.from_json, log.find(DqnBaseline.kind))
    cells: dict[tuple[float, int], SweepCell] = {}
    for record in log.records:
        if record["kind"] == KIND:
            cell = log.parse(SweepCell.from_json, record)
            cells.setdefault((cell.percentile, cell.T), cell)
    return sweep_rows(dqn.score, cells.values())


def sweep(checkpoint: DQNCheckpoint, Ts: Sequence[int], percentiles: Sequence[float | str], settings: RunSettings,
          out_dir: str | Path, *, test_frames: int = 1000) -> list[list[object]]:
    """Measure every (p, T) cell, resuming from `out_dir`; write sweep.csv/.md and the plots of every cell
    measured there so far (this grid and earlier ones); return the rows."""
    from dqn2snn_plugin.experiments.plots import plot_sweep

    Ts, ps = check_grid(Ts, percentiles, settings.coding)
    settings.check()
    if test_frames < 1:
        raise ConfigError(f"test-frames must be at least 1, got {test_frames}")
    check_memory(checkpoint, settings, test_frames)  # before the DQN's games, not after
    log = CellLog(Path(out_dir), sweep_config(checkpoint, settings, test_frames))
    if log.find(DqnBaseline.kind) is not None:
        logged_rows(log)  # a damaged record is refused now, not after the new cells
    else:
        log.append(DqnBaseline(play_dqn(checkpoint, settings)[0]).to_json())

    def compute(todo: Sequence[tuple[float, int]]) -> Iterator[dict]:
        """The missing cells, one conversion and one held-out simulation per percentile."""
        calibration, test, _, _ = calibration_and_heldout_states(checkpoint, settings, test_frames)
        for p, cells in groupby(todo, key=lambda cell: cell[0]):
            cell_Ts = [T for _, T in cells]
            snn = convert(checkpoint, calibration, percentile=p, backend=settings.backend, readout=settings.readout,
                          coding=settings.coding, channel_wise=settings.channel_wise)
            heldout = heldout_agreement(checkpoint, snn, test, cell_Ts)
            for T in cell_Ts:
                yield run_cell(checkpoint, snn, p, T, settings, heldout[T]).to_json()

    cells = [(p, T) for p in ps for T in Ts]
    CellRunner(log, cells, lambda cell: {"percentile": cell[0], "T": cell[1]}, desc="sweep cells").run(compute)
    rows = logged_rows(log)
    write_table(log.directory, "sweep", SWEEP_HEADERS, rows)
    dqn = log.parse(DqnBaseline.from_json, log.find(DqnBaseline.kind))
    plot_sweep(log.directory, rows, dqn_score=dqn.score.mean)
    return rows
