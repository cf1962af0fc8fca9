"""CellRunner: only missing cells are computed, each record is in the log the moment it arrives, and
a run stopped mid-way resumes with the rest."""

from __future__ import annotations

import pytest

from dqn2snn_plugin.experiments.runner import CellRunner
from dqn2snn_plugin.io.results import CellLog

CELLS = [(p, T) for p in (99.0, 100.0) for T in (2, 4)]


def _key(cell: tuple[float, int]) -> dict:
    return {"percentile": cell[0], "T": cell[1]}


def _record(cell: tuple[float, int]) -> dict:
    return {"kind": "cell", **_key(cell), "value": cell[0] * cell[1]}


def test_a_stopped_run_resumes_with_the_missing_cells_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    computed = []

    def stops_after_two(todo):
        for cell in todo:
            if len(computed) == 2:
                raise KeyboardInterrupt
            computed.append(cell)
            yield _record(cell)

    runner = CellRunner(CellLog(tmp_path, {"format": "t"}), CELLS, _key)
    with pytest.raises(KeyboardInterrupt):
        runner.run(stops_after_two)
    assert len(CellLog(tmp_path, {"format": "t"}).records) == 2  # durably written before the stop

    computed.clear()
    resumed = CellRunner(CellLog(tmp_path, {"format": "t"}), CELLS, _key)
    assert resumed.missing() == CELLS[2:]

    def in_reverse(todo):  # records may arrive in any order (Ray): the result is in run order
        for cell in reversed(todo):
            computed.append(cell)
            yield _record(cell)

    assert resumed.run(in_reverse) == [_record(cell) for cell in CELLS]
    assert computed == CELLS[:1:-1]
    assert CellRunner(CellLog(tmp_path, {"format": "t"}), CELLS, _key).run(in_reverse) == resumed.run(in_reverse)
    assert len(computed) == 2  # nothing left to compute
