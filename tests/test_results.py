"""Result files: output paths checked before any work, damaged cell logs named, incompatible runs explained."""

from __future__ import annotations

import json

import pytest

from dqn2snn_plugin.experiments import sweep as sw
from dqn2snn_plugin.errors import ResultsError
from dqn2snn_plugin.io.results import CellLog, check_output_dir, check_output_file, writable_dir


def test_output_paths_are_checked_without_creating_anything(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_file(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"
    assert not (tmp_path / "new").exists()
    with pytest.raises(ResultsError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(ResultsError, match="is a file, so no folder can be made below it"):
        check_output_dir(tmp_path / "file" / "out")
    with pytest.raises(ResultsError, match=r"--output .*folder is a folder: pass a file path such as"):
        check_output_file(tmp_path / "folder")
    for check in (check_output_dir, check_output_file):
        with pytest.raises(ResultsError, match="--output is empty"):
            check("")


@pytest.mark.parametrize("config_text", ["", "not json", "[1, 2]"])
def test_an_empty_or_invalid_config_is_named(tmp_path, config_text):
    (tmp_path / "config.json").write_text(config_text)
    with pytest.raises(ResultsError, match=r"config\.json is empty or not a JSON object"):
        CellLog(tmp_path, {"a": 1})


@pytest.mark.parametrize("line", ["garbage", "[1, 2]", '{"T": 4}'])
def test_a_damaged_cell_line_is_named_with_its_number(tmp_path, line):
    CellLog(tmp_path, {"a": 1}).append({"kind": "dqn", "score": {"mean": 1.0}})
    with open(tmp_path / "cells.jsonl", "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(ResultsError, match=r"cells\.jsonl line 2 is not a result record"):
        CellLog(tmp_path, {"a": 1})


def test_a_cell_missing_keys_is_named_before_the_table(tmp_path):
    log = CellLog(tmp_path, {"a": 1})
    log.append({"kind": "dqn", "score": {"mean": 1.0, "std": 0.0, "scores": [1.0], "lengths": [9], "truncated": 0}})
    log.append({"kind": "cell", "percentile": 99.9, "T": 4})
    with pytest.raises(ResultsError, match=r"cells\.jsonl: a record lacks 'score'"):
        sw.logged_rows(log)


@pytest.mark.parametrize("name", ["config.json", "cells.jsonl"])
def test_a_folder_where_a_results_file_belongs_is_named(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(ResultsError, match=rf"{name} is not a file \(a folder\?\)"):
        CellLog(tmp_path, {"a": 1})


def test_cell_log_drops_a_line_cut_short_by_a_crash(tmp_path):
    log = CellLog(tmp_path, {"format": "x"})
    log.append({"kind": "dqn", "score": {"mean": 1.0}})
    with open(tmp_path / "cells.jsonl", "a") as handle:
        handle.write('{"kind": "cell", "perc')
    reopened = CellLog(tmp_path, {"format": "x"})
    assert len(reopened.records) == 1
    reopened.append({"kind": "cell", "percentile": 99.0, "T": 8})
    assert len(CellLog(tmp_path, {"format": "x"}).records) == 2
    with pytest.raises(ResultsError, match="incompatible"):
        CellLog(tmp_path, {"format": "y"})


def test_writable_dir_refuses_a_path_below_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ResultsError, match="cannot write"):
        writable_dir(tmp_path / "file" / "out")


def test_an_incompatible_run_names_the_differing_setting_only(tmp_path):
    CellLog(tmp_path, {"format": "v1", "settings": {"episodes": 10, "seed": 0}})
    with pytest.raises(ResultsError) as info:
        CellLog(tmp_path, {"format": "v1", "settings": {"episodes": 3, "seed": 0}})
    assert "settings.episodes: 10 there, 3 now" in str(info.value) and "seed" not in str(info.value)
    assert json.loads((tmp_path / "config.json").read_text())["settings"]["episodes"] == 10
