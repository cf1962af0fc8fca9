"""`dqn2snn benchmark`: a grid of games x settings, one cell each, resumable, run here or on Ray.

A cell is one game (one set of Q-network weights) at one `Setting` (coding, T, percentile, scale
granularity), measured by `evaluation.evaluate`. Checkpoints holding the same weights (a `.zip` and
the `.qnet.pt` made from it) are one game. Each finished cell is appended to `DIR/cells.jsonl` at
once (`runner.CellRunner`), keyed by the weights' digest and the setting, so a rerun computes only the
missing cells and a grid can be extended later; `DIR/config.json` pins what every cell shares
(episodes, step cap, seed, how the calibration states are drawn, ...), and a rerun with other values
is refused. The driver is the only writer: a `Runner` (`run_here`, or `adapters.ray.RayRunner`)
computes cells and yields their records.

Binary coding's T counts bits per layer (at most `binary_coding.MAX_BITS`): a grid that pairs a
larger T with binary coding skips those cells and says so (a rate-coded T = 500 is still run);
a grid with no cell left is refused.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.envs.play import EnvFactory
from dqn2snn_plugin.errors import ConfigError, ResultsError
from dqn2snn_plugin.experiments.confidence import METHOD
from dqn2snn_plugin.experiments.evaluation import calibration_draws, check_grid, evaluate
from dqn2snn_plugin.experiments.records import BenchmarkCell, weights_digest
from dqn2snn_plugin.experiments.report import (
    BENCHMARK_HEADERS, SCORE_HEADERS, benchmark_row, score_record, score_row, setting_label,
)
from dqn2snn_plugin.experiments.runner import CellRunner
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.io.results import CellLog, write_json, write_table
from dqn2snn_plugin.coding import check_coding

BENCHMARK_FORMAT = "dqn2snn-benchmark-v1"


@dataclass(frozen=True)
class Setting:
    """How one cell converts and simulates: coding ("rate" or "binary"), T (time steps per decision;
    bits per layer for binary coding), percentile (100 = max) and one scale per channel or per layer."""

    coding: str
    T: int
    percentile: float
    channel_wise: bool = False

    def key(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        return setting_label(self.coding, self.T, self.percentile, self.channel_wise)


# The paper's setting (Tan et al. 2021) and our best training-free one (docs/results.md, binary coding).
PAPER_SETTING = Setting("rate", 500, 99.9, False)
BEST_SETTING = Setting("binary", 8, 99.99, True)
PAPER_GAMES = ("Atlantis", "BeamRider", "Boxing", "Breakout", "CrazyClimber", "Gopher", "Jamesbond", "Kangaroo",
               "Krull", "NameThisGame", "Pong", "RoadRunner", "SpaceInvaders", "StarGunner", "Tennis", "Tutankham",
               "VideoPinball")


def hub_id(game: str) -> str:
    """The RL-Zoo checkpoint of an Atari game on the Hugging Face Hub."""
    return f"hf://sb3/dqn-{game}NoFrameskip-v4"


def grid_settings(Ts: Iterable[int], percentiles: Iterable[float | str], codings: Iterable[str],
                  channel_wise: bool = False) -> tuple[list[Setting], list[str]]:
    """Every (coding, T, percentile) combination, validated and ordered, and a note per skipped one
    (a T beyond what its coding simulates: binary coding's MAX_BITS bits); ConfigError if none is left."""
    Ts, ps = check_grid(Ts, percentiles)
    codings = list(dict.fromkeys(check_coding(c) for c in codings))
    if not codings:
        raise ConfigError("need at least one coding")
    settings, skipped = [], []
    for coding in codings:
        for T in Ts:
            if T > coding.max_T:
                skipped.append(f"{coding.name} coding at T={T} skipped: it simulates at most T = {coding.max_T}"
                               f"{coding.T_note}")
                continue
            settings += [Setting(coding, T, p, channel_wise) for p in ps]
    if not settings:
        codings[0].check_T(Ts[-1])  # every cell had too many steps for its coding: the coding's own error says why
    return settings, skipped


# ---------------------------------------------------------------- games and cells


@dataclass(frozen=True)
class Game:
    """One set of Q-network weights, with every source that holds them."""

    checkpoint: DQNCheckpoint
    digest: str
    sources: tuple[str, ...]

    @property
    def name(self) -> str:
        return (self.checkpoint.env_id or "?").removesuffix("NoFrameskip-v4")


def unique_games(checkpoints: Sequence[DQNCheckpoint]) -> list[Game]:
    """The checkpoints as games: those with equal weights (`records.weights_digest`) merge into the first."""
    games: dict[str, Game] = {}
    for checkpoint in checkpoints:
        digest = weights_digest(checkpoint)
        if digest in games:
            games[digest] = replace(games[digest], sources=(*games[digest].sources, checkpoint.source))
        else:
            games[digest] = Game(checkpoint, digest, (checkpoint.source,))
    return list(games.values())


def split_paper_games(games: Sequence[Game]) -> tuple[list[Game], list[str], list[Game]]:
    """(games of the paper's list, the paper's games without a checkpoint, games outside the list)."""
    ours = [g for g in games if g.name in PAPER_GAMES]
    found = {g.name for g in ours}
    return ours, [name for name in PAPER_GAMES if name not in found], [g for g in games if g.name not in PAPER_GAMES]


@dataclass(frozen=True)
class Cell:
    """One game at one setting."""

    game: Game
    setting: Setting

    def key(self) -> dict:
        """What identifies the cell's record in the log: the weights and the setting, not the file."""
        return {"checkpoint_sha": self.game.digest, **self.setting.key()}


PER_CELL = ("coding", "channel_wise")  # settings a cell's `Setting` decides, not the folder


def shared_config(settings: RunSettings) -> dict:
    """What every cell of a results directory shares: the settings (less PER_CELL) and how the
    calibration states are drawn (`evaluation.calibration_draws`)."""
    calibration, _ = calibration_draws(settings.check())
    return {"format": BENCHMARK_FORMAT, **settings.as_config(omit=PER_CELL),
            "calibration_states": calibration.to_json()}


def measure_cell(checkpoint: DQNCheckpoint, setting: Setting, settings: RunSettings,
                 env_factory: EnvFactory | None = None) -> BenchmarkCell:
    """The cell's record: `evaluate` at the setting (in the user's own vector env if `env_factory` is
    given), plus the host it ran on and its wall time."""
    start = time.perf_counter()
    result = evaluate(checkpoint, T=setting.T, percentile=setting.percentile,
                      settings=replace(settings, coding=setting.coding, channel_wise=setting.channel_wise),
                      env_factory=env_factory)
    return BenchmarkCell(setting.coding, setting.channel_wise, result, socket.gethostname(), None,
                         time.perf_counter() - start)


Runner = Callable[[Sequence[Cell], RunSettings], Iterator[dict]]  # computes cells, yields their JSON records


def run_here(cells: Sequence[Cell], settings: RunSettings) -> Iterator[dict]:
    """Compute the cells one after another in this process."""
    for cell in cells:
        yield measure_cell(cell.game.checkpoint, cell.setting, settings).to_json()


def checkpoint_sources(paths: Sequence[str]) -> list[str]:
    """The checkpoints named, with every .zip/.pt/.pth file inside a named directory (sorted)."""
    sources = []
    for path in paths:
        if Path(path).is_dir():
            found = sorted(str(f) for f in Path(path).iterdir() if f.suffix in (".zip", ".pt", ".pth"))
            if not found:
                raise ResultsError(f"{path} holds no checkpoint (.zip, .pt, .pth)")
            sources += found
        else:
            sources.append(path)
    return sources


# ---------------------------------------------------------------- the driver


class Grid:
    """The cells of `games` x `settings` against the log in `out_dir` (opened, or created, at once)."""

    def __init__(self, games: Sequence[Game], settings: Sequence[Setting], run_settings: RunSettings,
                 out_dir: str | Path) -> None:
        self.run_settings = run_settings
        self.log = CellLog(Path(out_dir), shared_config(run_settings))
        self.cells = [Cell(game, setting) for game in games for setting in settings]
        self.runner = CellRunner(self.log, self.cells, Cell.key)

    def missing(self) -> list[Cell]:
        """The cells the log does not hold yet."""
        return self.runner.missing()

    def records(self) -> list[BenchmarkCell]:
        """The logged records of the grid's cells, in grid order (after `run`, every cell's).
        ResultsError, naming the file, for a record that lacks what a row needs (edited or damaged)."""
        return [self.log.parse(BenchmarkCell.from_json, record) for record in map(self.runner.record, self.cells)
                if record is not None]

    def run(self, runner: Runner = run_here) -> list[list[object]]:
        """Compute the missing cells with `runner`, appending each record the moment it arrives;
        write DIR/benchmark.csv and .md, and the score comparison with 95% intervals as
        DIR/scores.csv, .md and .json (`report.SCORE_HEADERS`); return the benchmark table's rows (grid order)."""
        self.runner.run(lambda todo: runner(todo, self.run_settings))
        cells = self.records()
        rows = [benchmark_row(cell) for cell in cells]
        write_table(self.log.directory, "benchmark", BENCHMARK_HEADERS, rows)
        write_table(self.log.directory, "scores", SCORE_HEADERS, [score_row(cell) for cell in cells])
        write_json(self.log.directory / "scores.json", {"method": METHOD, "cells": [score_record(c) for c in cells]})
        return rows
