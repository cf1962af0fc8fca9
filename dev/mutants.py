"""Mutation check (a developer tool, not part of CI): plant known bugs one at a time, run the tests.

Each mutant listed in `mutants.toml` replaces one snippet of a module under `dqn2snn_plugin/` (the engine,
coding, normalization, metrics, tuning, evaluation, and the numbers users read: tables, records, plots, demo,
grid, quantisation, NIR loaders, distillation, results, Ray) with a plausible wrong version (the kind of slip a
refactor makes: argmin for argmax, `>=` for `>`, a dropped `abs`, the last option instead of the best, two
columns swapped, a number from the wrong record, truncation for rounding). The script copies the package
and its tests to a temporary directory, applies the mutant there (the working tree is never
touched), and runs the mutated module's own tests with `pytest -x`. A mutant that no test notices
*survives*: either a test is missing, or the mutant is harmless (then its entry says why, in
`survives`, and it no longer fails the run).
A snippet that no longer occurs exactly once is reported *stale* (the code moved on: update the list).

    .venv/bin/python dev/mutants.py                     # every mutant
    .venv/bin/python dev/mutants.py --module metrics    # one module's
    .venv/bin/python dev/mutants.py --budget 900 --out runs/mutants.md

mutmut and cosmic-ray generate hundreds of mutants per module, each needing a test run of 1-60 s:
hours on a 2-core machine, which is why this is a hand-written list of the bugs that matter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dqn2snn_plugin.io.results import write_text

ROOT = Path(__file__).resolve().parents[1]
LIST = Path(__file__).with_name("mutants.toml")


@dataclass(frozen=True)
class Mutant:
    """One planted bug: `old` (occurring exactly once in `module`) becomes `new`."""

    module: str  # <module>.py somewhere under dqn2snn_plugin/ (names the tests: tests/test_<module>.py)
    name: str
    old: str
    new: str
    tests: tuple[str, ...]  # test files (and pytest options) that should catch it
    survives: str = ""  # why it is harmless, for a mutant no test should catch
    file: str = ""  # the file somewhere under dqn2snn_plugin/ that holds `old`, if not <module>.py (e.g. fused_scan.c)


def load_mutants(path: Path = LIST) -> list[Mutant]:
    """The planted bugs listed in `path` (see mutants.toml for the fields)."""
    entries = tomllib.loads(path.read_text())["mutant"]
    return [Mutant(**{**e, "tests": tuple(e.get("tests", [f"tests/test_{e['module']}.py"]))}) for e in entries]


def copy_tree(work: Path) -> Path:
    """The package and its tests under work/repo, with work/shared -> the real shared fixtures, so the
    tests find them as in the checkout."""
    repo = work / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "dqn2snn_plugin", repo / "dqn2snn_plugin", ignore=ignore)
    shutil.copytree(ROOT / "tests", repo / "tests", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")  # pytest's markers and options
    (work / "shared").symlink_to((ROOT.parent / "shared").resolve())
    return repo


def source_file(repo: Path, mutant: Mutant) -> Path | None:
    """The one file under the copy's package that the mutant edits (None: no such file, or several)."""
    found = sorted((repo / "dqn2snn_plugin").rglob(mutant.file or f"{mutant.module}.py"))
    return found[0] if len(found) == 1 else None


def run_tests(repo: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """("killed" | "survived" | "timeout", seconds, the first failing test or '')."""
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    failed = next((line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAILED")), "")
    return ("survived" if done.returncode == 0 else "killed"), time.perf_counter() - start, failed


def check_imports_copy(repo: Path) -> None:
    """The tests must import the mutated copy, not the installed (editable) package."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, "-c", "import dqn2snn_plugin.network as m, dqn2snn_plugin.adapters.sb3 as a;"
                          "print(m.__file__); print(a.__file__)"], cwd=repo, env=env, capture_output=True, text=True)
    paths = out.stdout.split()
    if out.returncode or len(paths) != 2 or not all(Path(p).is_relative_to(repo) for p in paths):
        raise SystemExit(f"the copy is not what gets imported: {out.stdout or out.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", help="only this module's mutants (repeatable)")
    parser.add_argument("--name", action="append", help="only mutants whose name contains this (repeatable)")
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds; no mutant starts after it")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (counted killed)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    mutants = [m for m in load_mutants() if (not args.module or m.module in args.module)
               and (not args.name or any(part in m.name for part in args.name))]
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dqn2snn-mutants-") as tmp:
        repo = copy_tree(Path(tmp))
        check_imports_copy(repo)
        for mutant in mutants:
            if time.perf_counter() - start > args.budget:
                rows.append((mutant, "not run (budget)", 0.0, ""))
                continue
            path = source_file(repo, mutant)
            if path is None:
                rows.append((mutant, "stale", 0.0, f"no single file {mutant.file or mutant.module + '.py'}"))
                continue
            original = path.read_text()
            if original.count(mutant.old) != 1:
                rows.append((mutant, "stale", 0.0, f"snippet found {original.count(mutant.old)} times"))
                continue
            path.write_text(original.replace(mutant.old, mutant.new))
            try:
                result, seconds, failed = run_tests(repo, mutant.tests, args.timeout)
            finally:
                path.write_text(original)
            rows.append((mutant, result, seconds, failed))
            print(f"{result:>9}  {seconds:6.1f} s  {mutant.module}: {mutant.name}  {failed}", flush=True)
    table = ["| module | mutant | result | s | caught by |", "|---|---|---|---|---|"]
    table += [f"| {m.module} | {m.name} | {r} | {s:.0f} | {f or m.survives} |" for m, r, s, f in rows]
    survivors = [m for m, r, _, _ in rows if r == "stale" or (r == "survived" and not m.survives)]
    summary = (f"{len(rows)} mutants, {len(survivors)} survived (not marked harmless) or stale, "
               f"{time.perf_counter() - start:.0f} s")
    text = "\n".join([*table, "", summary, ""])
    print("\n" + text)
    if args.out:
        write_text(args.out, text)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
