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

from dqn2snn_plugin.errors import ResultsError


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
        if self.config_path.exists():
            stored = json.loads(self.config_path.read_text())
            differ = [f"{k}: {stored.get(k)!r} there, {config.get(k)!r} now"
                      for k in sorted(set(stored) | set(config)) if stored.get(k) != config.get(k)]
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

    def _read(self) -> list[dict]:
        """Every complete record; a line cut short by a crash is dropped from the file."""
        if not self.cells_path.exists():
            return []
        text = self.cells_path.read_text()
        complete = text[: text.rfind("\n") + 1]
        if complete != text:
            with open(self.cells_path, "r+") as handle:
                handle.truncate(len(complete.encode()))
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def append(self, record: dict) -> None:
        """Add one finished record durably (flush + fsync) before anything else is computed."""
        with open(self.cells_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records.append(record)

    def find(self, kind: str, **key: object) -> dict | None:
        return next((r for r in self.records if r["kind"] == kind and all(r[k] == v for k, v in key.items())), None)
