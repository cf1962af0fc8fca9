"""The one resumable runner of `sweep` and `benchmark`: cells against an append-only `CellLog`.

A run is a list of cells, each identified in the log by its key (`key(cell)`, a dict of JSON values).
`missing()` names the cells the log does not hold yet; `run(compute)` hands those to `compute`, which
yields one JSON record per cell in any order (one after another here, or as Ray tasks finish), and
appends each record durably the moment it arrives, so a run stopped at any point resumes with the
cells still missing and no cell is computed twice. The runner is the only writer of the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from tqdm.auto import tqdm

from dqn2snn_plugin.io.results import CellLog

C = TypeVar("C")
KIND = "cell"  # the `kind` of a cell's record (the log holds other kinds too: a sweep's DQN baseline)


class CellRunner(Generic[C]):
    """`cells` against `log`; a cell's record is the log's record of kind "cell" with `key(cell)`'s values."""

    def __init__(self, log: CellLog, cells: Sequence[C], key: Callable[[C], dict], *, desc: str = "cells") -> None:
        self.log, self.cells, self.key, self.desc = log, list(cells), key, desc

    def record(self, cell: C) -> dict | None:
        """The logged record of `cell`, or None."""
        return self.log.find(KIND, **self.key(cell))

    def missing(self) -> list[C]:
        """The cells the log does not hold yet, in run order."""
        return [cell for cell in self.cells if self.record(cell) is None]

    def run(self, compute: Callable[[Sequence[C]], Iterable[dict]]) -> list[dict]:
        """Compute the missing cells with `compute`, appending each record as it arrives (with a
        progress bar over the whole run); return every cell's record in run order."""
        todo = self.missing()
        done = len(self.cells) - len(todo)
        if todo:
            records = compute(todo)  # before the bar: a runner's refusal (a Ray cell that fits no node) is one line
            with tqdm(total=len(self.cells), initial=done, desc=self.desc, unit="cell") as bar:
                for record in records:
                    self.log.append(record)
                    bar.update(1)
        return [self.record(cell) for cell in self.cells]
