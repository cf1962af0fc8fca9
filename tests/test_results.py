"""Result files: output paths checked before any work, damaged cell logs named, incompatible runs explained;
writes that are whole or nothing under a full disk or a file-size limit, through symlinks and onto devices;
folders written as a whole; a results folder locked while a run uses it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from dqn2snn_plugin.experiments import sweep as sw
from dqn2snn_plugin.errors import ResultsError
from dqn2snn_plugin.io.results import (
    LOCK_NAME, CellLog, check_output_dir, check_output_file, writable_dir, write_folder, write_json,
)


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
    with pytest.raises(ResultsError, match="holds results of format 'x', not results of format 'y'"):
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


def test_a_folder_of_a_run_with_many_other_settings_is_named_in_one_sentence(tmp_path):
    """Issue 24.21: past three differing settings, one sentence says what the folder holds and the first three."""
    stored = {"format": "dqn2snn-sweep-v1", **{f"s{i}": i for i in range(10)}}
    CellLog(tmp_path, stored)
    with pytest.raises(ResultsError) as info:
        CellLog(tmp_path, {"format": "dqn2snn-sweep-v1", **{f"s{i}": -i for i in range(10)}})
    assert str(info.value) == (f"{tmp_path} holds a sweep (format dqn2snn-sweep-v1), an incompatible run with 9 other "
                               "settings (first s1: 1 there, -1 now; s2: 2 there, -2 now; s3: 3 there, -3 now): use "
                               "another output directory, or delete that one to start over")
    with pytest.raises(ResultsError) as info:  # three or fewer: each one
        CellLog(tmp_path, {**stored, "s1": 0, "s2": 0, "s3": 0})
    assert "(s1: 1 there, 0 now; s2: 2 there, 0 now; s3: 3 there, 0 now)" in str(info.value)


def _limited(code: str, limit: int = 4096) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python whose files may not grow beyond `limit` bytes (RLIMIT_FSIZE, with
    SIGXFSZ ignored as the CLI does): a full disk, for every writer."""
    prologue = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n")
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.mark.slow
def test_a_full_disk_keeps_every_earlier_file_and_names_the_one_not_written(tmp_path):
    """JSON, a PNG (plots), a torch file (save_snn's writer) and a cell's line: each write that does not
    fit is one ResultsError naming its file, and the file written before stays whole."""
    from dqn2snn_plugin.experiments.plots import plot_agreement_vs_latency

    png = tmp_path / "plot.png"
    plot_agreement_vs_latency(png, {"a": [(1, 0.5), (2, 0.9)]}, title="before")
    write_json(tmp_path / "r.json", {"old": 1})
    (tmp_path / "m.pt").write_bytes(b"old torch file")
    log = CellLog(tmp_path / "log", {"format": "x"})
    log.append({"kind": "cell", "T": 1})
    before = {name: (tmp_path / name).read_bytes() for name in ("plot.png", "r.json", "m.pt", "log/cells.jsonl")}
    del log  # its lock, for the writer below
    out = _limited(f"""
        import torch
        from pathlib import Path
        from dqn2snn_plugin.errors import ResultsError
        from dqn2snn_plugin.experiments.plots import plot_agreement_vs_latency
        from dqn2snn_plugin.io.results import CellLog, write_file, write_json
        d = Path({str(tmp_path)!r})
        log = CellLog(d / "log", {{"format": "x"}})
        for write in (lambda: write_json(d / "r.json", {{"new": "x" * 10000}}),
                      lambda: plot_agreement_vs_latency(d / "plot.png", {{"b": [(1, 0.1)] * 2000}}, title="after"),
                      lambda: write_file(d / "m.pt", lambda tmp: torch.save(torch.zeros(10000), tmp)),
                      lambda: log.append({{"kind": "cell", "T": 2, "pad": "x" * 10000}})):
            try:
                write()
            except ResultsError as exc:
                print(exc)
        """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("cannot write ") for line in lines), out.stdout
    for line, name in zip(lines, ("r.json", "plot.png", "m.pt", "cells.jsonl")):
        assert name in line and ("File too large" in line or "file-size limit" in line)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "m.pt", "plot.png", "r.json"]  # no temp file left


def test_a_symlink_is_written_through_and_a_device_or_fifo_directly(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    (tmp_path / "link.json").symlink_to(target)
    write_json(tmp_path / "link.json", {"a": 1})
    assert (tmp_path / "link.json").is_symlink() and json.loads(target.read_text()) == {"a": 1}

    (tmp_path / "null").symlink_to(os.devnull)
    write_json(tmp_path / "null", {"a": 1})
    assert (tmp_path / "null").is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    write_json(fifo, {"b": 2})
    reader.join(10)
    assert json.loads(received[0]) == {"b": 2} and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_folder_is_written_as_a_whole(tmp_path):
    old = tmp_path / "out"
    old.mkdir()
    for name, text in (("snn.pt", "old"), ("snn.nir", "old"), ("notes.txt", "mine")):
        (old / name).write_text(text)

    def fill(folder):
        write_json(folder / "snn.pt", "new")
        write_json(folder / "scales.json", "new")

    write_folder(old, fill, replaces=("snn.pt", "scales.json", "snn.nir"))
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt", "scales.json", "snn.pt"]  # no stale snn.nir
    assert (old / "notes.txt").read_text() == "mine" and json.loads((old / "snn.pt").read_text()) == "new"

    def fail(folder):
        write_json(folder / "snn.pt", "newer")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(old, fail, replaces=("snn.pt",))
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt", "scales.json", "snn.pt"]
    assert json.loads((old / "snn.pt").read_text()) == "new"
    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path / "a" / "b", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no empty folder, no temp folder left
    write_folder(tmp_path / "a" / "b", fill)
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["scales.json", "snn.pt"]


@pytest.mark.parametrize("where", ["/proc/dqn2snn-out", "name-too-long"])
def test_an_impossible_output_folder_is_refused_before_any_work(tmp_path, where):
    path = tmp_path / ("x" * 300) if where == "name-too-long" else where
    with pytest.raises(ResultsError, match="no folder can be written there"):
        check_output_dir(path)
    assert list(tmp_path.iterdir()) == []


def test_a_results_folder_in_use_is_refused_naming_the_run_that_holds_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from dqn2snn_plugin.io.results import CellLog
        log = CellLog(Path({str(tmp_path)!r}), {{"format": "x"}})
        print("locked", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(ResultsError) as info:
            CellLog(tmp_path, {"format": "x"})
        assert str(info.value).startswith(f"{tmp_path} is in use by another dqn2snn run (pid {holder.pid} on "
                                          f"{socket.gethostname()}, since ")
    finally:
        holder.communicate("")
    assert CellLog(tmp_path, {"format": "x"}).records == []  # free once the holder ended
    assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} ")


def test_a_folder_of_another_kind_of_run_is_named_in_one_sentence(tmp_path):
    CellLog(tmp_path, {"format": "dqn2snn-sweep-v1", "episodes": 10, "T": [4]})
    with pytest.raises(ResultsError) as info:
        CellLog(tmp_path, {"format": "dqn2snn-benchmark-v1", "episodes": 3})
    assert str(info.value) == (f"{tmp_path} holds a sweep, not a benchmark: use another output folder, or delete "
                               "that one to start over")


def test_dev_stdout_redirected_to_a_file_is_written_there_not_replaced(tmp_path):
    """`-o /dev/stdout > out.txt`: /dev/stdout stays the system's link, out.txt the same file (its inode)."""
    out = tmp_path / "out.txt"
    out.write_text("")
    inode = out.stat().st_ino
    with open(out, "w") as handle:
        subprocess.run([sys.executable, "-c", "from dqn2snn_plugin.io.results import write_json; "
                        "write_json('/dev/stdout', {'a': 1})"], stdout=handle, check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stat().st_ino == inode and json.loads(out.read_text()) == {"a": 1}
    assert os.path.islink("/dev/stdout")


# ---------------------------------------------------------------- tables and records hold what was given


def test_a_table_holds_every_row_in_order_in_both_files(tmp_path):
    from dqn2snn_plugin.io.results import markdown_table, write_table

    headers = ["a", "b", "c"]
    rows = [[1, "x", 2.5], [3, "y, z", -4.0], [5, "", "6%"]]  # a comma inside a cell; an empty cell
    write_table(tmp_path, "t", headers, rows)
    csv_lines = (tmp_path / "t.csv").read_text().splitlines()
    assert csv_lines == ["a,b,c", "1,x,2.5", '3,"y, z",-4.0', "5,,6%"]
    md_lines = (tmp_path / "t.md").read_text().splitlines()
    assert md_lines == ["| a | b | c |", "|---|---|---|", "| 1 | x | 2.5 |", "| 3 | y, z | -4.0 |", "| 5 |  | 6% |"]
    assert markdown_table(headers, iter(rows)).splitlines()[2:] == md_lines[2:]  # rows may come from a generator


def test_a_logged_record_is_found_by_every_key_value(tmp_path):
    log = CellLog(tmp_path, {"format": "dqn2snn-test-v1"})
    for T, p in ((4, 99.9), (8, 99.9), (8, 99.0)):
        log.append({"kind": "cell", "T": T, "percentile": p, "value": T * p})
    log.append({"kind": "dqn", "T": 8, "percentile": 99.0, "value": -1})
    assert log.find("cell", T=8, percentile=99.0)["value"] == 8 * 99.0
    assert log.find("cell", T=8, percentile=99.9)["value"] == 8 * 99.9
    assert log.find("dqn", T=8)["value"] == -1
    assert log.find("cell", T=4, percentile=99.0) is None
    again = CellLog(tmp_path, {"format": "dqn2snn-test-v1"})  # read back from the file
    assert [r["value"] for r in again.records] == [4 * 99.9, 8 * 99.9, 8 * 99.0, -1]
