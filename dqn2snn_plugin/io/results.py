"""Result files: atomic writes, whole folders, tables, and the append-only cell log that makes runs resumable.

Every file a command writes goes through `write_file`, so each is written whole or not at all (temp
file + `os.replace`), with the permissions the user's umask gives, where the path points (a symlink's
target; a character device or FIFO such as /dev/stdout is written directly), and a failed write (a
full disk, a file-size limit) is one ResultsError naming the file while the earlier file stays.
Files that belong together (`convert`'s snn.pt, scales.json and snn.nir) go through `write_folder`,
so a folder never mixes two runs. A `CellLog` folder is locked while a run uses it.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

from dqn2snn_plugin.errors import ResultsError

R = TypeVar("R")


def writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and prove it writable; ResultsError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test"):
            pass
    except OSError as exc:
        raise ResultsError(f"cannot write results to {path}: {exc.strerror or exc}") from None
    return path


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _failure(path: Path, exc: BaseException) -> str:
    """Why writing `path` failed, in words (a full disk, a file-size limit, a refused folder)."""
    if isinstance(exc, RuntimeError):  # torch.save's zip writer: "[enforce fail at inline_container.cc] ..."
        return f"cannot write {path}: the write failed, the disk is full or a file-size limit was reached ({exc})"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"cannot write {path}: {exc.strerror}: free some space or raise the limit (what was written before "
                "is kept)")
    return f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}"


@contextmanager
def _failures_named(path: Path, after: str = "") -> Iterator[None]:
    """A write that fails in the block (an OSError, or torch.save's RuntimeError for a write cut short)
    becomes one ResultsError naming `path`, followed by `after`."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "inline_container" not in str(exc):
            raise
        raise ResultsError(_failure(path, exc) + after) from None


def check_output_dir(path: str | Path, flag: str = "--output") -> Path:
    """Refuse, before any work and without leaving anything behind, an output folder that cannot be
    made: a path onto a file, below a file, or where no folder can be written (an unwritable or
    read-only place, a name too long). It is proved by making the missing folders inside a temp
    folder in the nearest existing one, then removing them."""
    if not str(path).strip():
        raise ResultsError(f"{flag} is empty: pass a folder path")
    path = Path(path)
    try:
        target = Path(os.path.realpath(path))
        if target.exists() and not target.is_dir():
            raise ResultsError(f"{flag} {path} is a file, not a folder: pass a folder path")
        base = _nearest_existing(target)
        if not base.is_dir():
            raise ResultsError(f"{flag} {path}: {base} is a file, so no folder can be made below it")
        with tempfile.TemporaryDirectory(dir=base, prefix=".dqn2snn-probe-") as probe:
            Path(probe, target.relative_to(base)).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{flag} {path}: no folder can be written there ({exc.strerror or exc}): pass a folder "
                           "you can write to") from None
    return path


def check_output_file(path: str | Path, flag: str = "--output") -> Path:
    """Refuse, before any work, an output file path that is a folder or whose folder cannot be made."""
    if not str(path).strip():
        raise ResultsError(f"{flag} is empty: pass a file path such as result.json")
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"{flag} {path} is a folder: pass a file path such as {path / 'result.json'}")
    if not (_is_stream(path) and path.exists()):
        check_output_dir(Path(os.path.realpath(path)).parent, flag)
    return path


def check_save_path(path: str | Path, what: str, example: str) -> Path:
    """Refuse, before anything is computed, a path a `save_*` call cannot write `what` to: a folder, or a
    file in a folder that does not exist (the caller's typo is not made into folders)."""
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"{path} is a folder: save the {what} to a file path such as {path / example}")
    if not path.parent.is_dir():
        raise ResultsError(f"cannot save {path}: the folder {path.parent} does not exist (create it first)")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_stream(path: Path) -> bool:
    """A character device or a FIFO (/dev/null, a named pipe), or a path through /proc (/dev/stdout,
    which may stand for the file of `> file`): written directly, never replaced."""
    absolute = Path(path).absolute()
    for prefix in (absolute, *absolute.parents):
        if prefix.parts[1:2] == ("proc",) or (prefix.is_symlink() and os.readlink(prefix).startswith("/proc/")):
            return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def write_file(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomically write a file that a library writes by name (h5py for NIR, torch.save): `writer(tmp)`
    fills a temp file beside `path`, which then replaces `path` with the umask's mode.

    A symlink is followed (its target is written, the link stays); a character device or FIFO is
    written directly. Missing folders above `path` are made with the file, in one rename (`write_folder`).
    A failed write (full disk, file-size limit, unwritable folder) is a ResultsError naming `path`;
    the file that was there stays as it was."""
    path = Path(path)
    if _is_stream(path):
        with _failures_named(path):
            writer(path)
        return
    target = Path(os.path.realpath(path))
    if not target.parent.exists():
        write_folder(target.parent, lambda folder: write_file(folder / target.name, writer))
        return
    with _failures_named(path):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}", suffix=".tmp")
        os.close(fd)
        try:
            writer(Path(tmp))
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def _signals_held():
    """Delay Ctrl-C and kill (SIGINT, SIGTERM, SIGHUP) over a few renames, so they happen all or none."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _fill(fill: Callable[[Path], None], tmp: Path, path: Path) -> None:
    """`fill(tmp)`; a ResultsError names the file where it belongs (`path`), not in the temp folder."""
    try:
        fill(tmp)
    except ResultsError as exc:
        raise ResultsError(str(exc).replace(str(tmp), str(path))) from None


def write_folder(path: str | Path, fill: Callable[[Path], None], *, replaces: Collection[str] = ()) -> Path:
    """Write a folder as a whole: `fill(tmp)` writes the files into a temp folder, then they take their
    places at once, so `path` never mixes files of two runs and a failed run changes nothing.

    A new `path` (with any missing folders above it) appears in one rename. In an existing folder the
    new files replace the old ones, and the files named in `replaces` that this run did not write
    are removed (a binary conversion's folder keeps no snn.nir of an earlier rate conversion); other
    files stay. Returns `path`."""
    path = Path(path)
    target = Path(os.path.realpath(path))
    base = _nearest_existing(target)
    with _failures_named(path):
        if target.is_dir():
            with tempfile.TemporaryDirectory(dir=target, prefix=".dqn2snn-incoming-") as tmp:
                _fill(fill, Path(tmp), path)
                written = {entry.name for entry in Path(tmp).iterdir()}
                with _signals_held():
                    for name in written:
                        os.replace(Path(tmp, name), target / name)
                    for name in set(replaces) - written:
                        if (target / name).is_file():
                            (target / name).unlink()
            return path
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=".dqn2snn-incoming-"))
        try:
            first, *rest = target.relative_to(base).parts  # base/first/rest... are made in tmp/rest...
            inner = tmp.joinpath(*rest)
            inner.mkdir(parents=True, exist_ok=True)
            _fill(fill, inner, path)
            os.chmod(tmp, 0o777 & ~_umask())  # as a plain mkdir would make it, not mkdtemp's 0700
            os.rename(tmp, base / first)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def write_text(path: str | Path, text: str) -> None:
    """Write a file atomically (temp file + os.replace): readers see the old file or the whole new one.

    The file gets the mode a plain `open(path, "w")` would give (0666 less the umask), not the 0600
    of a temp file."""
    write_file(path, lambda tmp: tmp.write_text(text, newline=""))


def write_json(path: str | Path, data: object) -> None:
    """JSON, written atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_table(directory: Path, name: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """`name.csv` and `name.md` holding the same rows, each written atomically."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows([headers, *rows])
    write_text(directory / f"{name}.csv", buffer.getvalue())
    write_text(directory / f"{name}.md", markdown_table(headers, rows) + "\n")


LOCK_NAME = ".dqn2snn.lock"
_locks: weakref.WeakValueDictionary[Path, _FolderLock] = weakref.WeakValueDictionary()


class _FolderLock:
    """An exclusive `flock` on DIR/.dqn2snn.lock, holding who took it (pid, host, time) for the one refused.

    Every `CellLog` of a folder in this process shares one lock (`folder_lock`); it is released when
    the last of them is gone (the file closes) or the process ends, however it ends."""

    def __init__(self, directory: Path) -> None:
        path = directory / LOCK_NAME
        try:
            self.handle: IO[str] = open(path, "a+")
        except OSError as exc:
            raise ResultsError(f"cannot lock {directory} for this run: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise ResultsError(f"{directory} is in use by another dqn2snn run ({holder}): wait for it to end, or "
                               "use another output folder") from None
        self.handle.truncate(0)
        self.handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.handle.flush()


def folder_lock(directory: Path) -> _FolderLock:
    """This process's lock on `directory`, taken now unless already held; ResultsError naming the holder."""
    key = Path(os.path.realpath(directory))
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = _FolderLock(key)
    return lock


class CellLog:
    """`DIR/config.json` + `DIR/cells.jsonl`: append-only, crash-safe results of one run configuration.

    The folder is locked (`folder_lock`) while the log exists: a second run into it at the same time
    is refused at once, naming the process that holds it, instead of computing every cell again."""

    def __init__(self, directory: Path, config: dict) -> None:
        self.directory = writable_dir(directory)
        self.lock = folder_lock(self.directory)
        self.config_path, self.cells_path = self.directory / "config.json", self.directory / "cells.jsonl"
        for path in (self.config_path, self.cells_path):
            if path.exists() and not path.is_file():
                raise ResultsError(f"{path} is not a file (a folder?): delete it to start over, or use another "
                                   "output folder")
        if self.config_path.exists():
            stored = self._stored_config()
            if stored.get("format") != config.get("format"):
                raise ResultsError(f"{self.directory} holds {_run_kind(stored, config)}, not "
                                   f"{_run_kind(config, stored)}: use another output folder, or delete that one to "
                                   "start over")
            differ = _differences(stored, config)
            if differ:
                raise ResultsError(f"{self.directory} holds {_incompatible(stored, config, differ)}: use another "
                                   "output directory, or delete that one to start over")
        elif self.cells_path.exists():
            raise ResultsError(f"{self.cells_path} exists without config.json: cannot tell which run made it")
        else:
            write_json(self.config_path, config)
        self.records = self._read()

    def _stored_config(self) -> dict:
        try:
            stored = json.loads(self.config_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            stored = None
        if not isinstance(stored, dict):
            raise ResultsError(f"{self.config_path} is empty or not a JSON object: delete that folder to start over, "
                               "or use another output folder")
        return stored

    def _read(self) -> list[dict]:
        """Every complete record; a line cut short by a crash is dropped from the file. ResultsError,
        naming the file and line, for a complete line that is not a record (edited or damaged)."""
        if not self.cells_path.exists():
            return []
        text = self.cells_path.read_text(errors="replace")
        complete = text[: text.rfind("\n") + 1]
        if complete != text:
            with open(self.cells_path, "r+") as handle:
                handle.truncate(len(complete.encode()))
        records = []
        for number, line in enumerate(complete.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or "kind" not in record:
                raise ResultsError(f"{self.cells_path} line {number} is not a result record: delete that line "
                                   "(its cell is measured again) or the folder")
            records.append(record)
        return records

    def append(self, record: dict) -> None:
        """Add one finished record durably (flush + fsync) before anything else is computed."""
        line = (json.dumps(record) + "\n").encode()
        with _failures_named(self.cells_path, "; rerun to compute the missing cells"), \
                open(self.cells_path, "ab") as handle:
            size = handle.tell()
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                handle.truncate(size)  # no part of the line stays
                raise
        self.records.append(record)

    def find(self, kind: str, **key: object) -> dict | None:
        """The first record of `kind` whose values include `key`'s, or None."""
        return next((r for r in self.records if r["kind"] == kind and all(r.get(k) == v for k, v in key.items())),
                    None)


    def parse(self, from_json: Callable[[dict], R], record: dict) -> R:
        """`from_json(record)`, or one ResultsError naming this log when the record lacks a key or holds a
        value of the wrong type (an edited or damaged line)."""
        try:
            return from_json(record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ResultsError(f"{self.cells_path}: a record lacks {exc} or holds the wrong type (edited or "
                               "damaged): delete that line (its cell is measured again) or the folder") from None


def _run_kind(config: dict, other: dict) -> str:
    """What made a results folder, from its format "dqn2snn-<kind>-v<n>": "a sweep", or with the
    version when `other` is of the same kind ("a sweep (format dqn2snn-sweep-v0)")."""
    name = str(config.get("format") or "")
    kind = name.removeprefix("dqn2snn-").rpartition("-v")[0]
    if not kind:
        return f"results of format {name!r}" if name else "results of no known format"
    same_kind = kind == str(other.get("format") or "").removeprefix("dqn2snn-").rpartition("-v")[0]
    return f"a {kind} (format {name})" if same_kind else f"a {kind}"


FEW_DIFFERENCES = 3  # more differing settings than this: the folder is another run, said in one sentence


def _incompatible(stored: dict, config: dict, differ: list[str]) -> str:
    """What a folder of the same kind of run but other settings holds: each differing setting when there
    are few, else how many differ and the first few."""
    if len(differ) <= FEW_DIFFERENCES:
        return f"results of an incompatible run ({'; '.join(differ)})"
    return (f"{_run_kind(stored, config)}, an incompatible run with {len(differ)} other settings "
            f"(first {'; '.join(differ[:FEW_DIFFERENCES])})")


def _differences(stored: dict, config: dict, prefix: str = "") -> list[str]:
    """"name: old there, new now" for every setting that differs, nested settings by dotted name."""
    differ = []
    for key in sorted(set(stored) | set(config)):
        old, new = stored.get(key), config.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differ += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differ.append(f"{prefix}{key}: {old!r} there, {new!r} now")
    return differ
