"""Result files: atomic writes, tables, and the append-only cell log that makes runs resumable.

Every file a command writes goes through here, so each is written whole or not at all (temp file +
`os.replace`), with the permissions the user's umask gives, and a run interrupted at any point keeps
what earlier runs produced.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

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


def check_output_dir(path: str | Path, flag: str = "--output") -> Path:
    """Refuse, before any work and without creating anything, an output folder that cannot be made:
    a path onto a file, or below a file or an unwritable folder. `writable_dir` creates it later."""
    if not str(path).strip():
        raise ResultsError(f"{flag} is empty: pass a folder path")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultsError(f"{flag} {path} is a file, not a folder: pass a folder path")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ResultsError(f"{flag} {path}: {base} is a file, so no folder can be made below it")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ResultsError(f"{flag} {path}: {base} is not writable: pass a folder you can write to")
    return path


def check_output_file(path: str | Path, flag: str = "--output") -> Path:
    """Refuse, before any work, an output file path that is a folder or whose folder cannot be made."""
    if not str(path).strip():
        raise ResultsError(f"{flag} is empty: pass a file path such as result.json")
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"{flag} {path} is a folder: pass a file path such as {path / 'result.json'}")
    check_output_dir(path.parent, flag)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomically write a file that a library writes by name (h5py for NIR, torch.save): `writer(tmp)`
    fills a temp file beside `path`, which then replaces `path` with the umask's mode."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}", suffix=".tmp")
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class CellLog:
    """`DIR/config.json` + `DIR/cells.jsonl`: append-only, crash-safe results of one run configuration."""

    def __init__(self, directory: Path, config: dict) -> None:
        self.directory = writable_dir(directory)
        self.config_path, self.cells_path = self.directory / "config.json", self.directory / "cells.jsonl"
        for path in (self.config_path, self.cells_path):
            if path.exists() and not path.is_file():
                raise ResultsError(f"{path} is not a file (a folder?): delete it to start over, or use another "
                                   "output folder")
        if self.config_path.exists():
            differ = _differences(self._stored_config(), config)
            if differ:
                raise ResultsError(
                    f"{self.directory} holds results of an incompatible run ({'; '.join(differ)}): "
                    "use another output directory, or delete that one to start over"
                )
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
        with open(self.cells_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
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
