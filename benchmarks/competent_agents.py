"""The competent-agents table of docs/results.md ("Competent agents keep their score (MinAtar)").

The shipped MinAtar DQNs (dqn2snn_plugin/data/minatar, trained by benchmarks/train_minatar.py), 100
whole games per player per cell, run as the user would: `dqn2snn benchmark` over the zips, one
command per setting, all into one results folder (each command extends the same resumable grid; the
folder's config.json pins what the cells share: episodes, n_envs, seed, calibration states):

1. binary coding T=8, p=99.99, one scale per channel (the README's headline setting);
2. the paper's rate coding at T=64, p=99.9, one scale per layer;
3. the paper's rate coding at T=500, p=99.9, per layer (the paper's T): the costliest, last, with
   Freeway (2,500-step games) last of all.

The benchmark cannot mix per-channel and per-layer scales in one command (`--channel-wise` is one
flag per command), hence one command per setting. Stop it any time and run it again to resume; then
`--table` prints every cell of the folder with 95% intervals (`report.scores_table`).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice python benchmarks/competent_agents.py [--out DIR] [--table]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common
from dqn2snn_plugin.experiments.records import BenchmarkCell
from dqn2snn_plugin.experiments.report import scores_table

DATA = Path(__file__).resolve().parent.parent / "dqn2snn_plugin" / "data" / "minatar"
GAMES = ("Breakout", "SpaceInvaders", "Asterix", "Seaquest", "Freeway")  # cheapest first: Freeway's games are longest
SETTINGS = (["--coding", "binary", "--T", "8", "--percentile", "99.99", "--channel-wise"],
            ["--coding", "rate", "--T", "64", "--percentile", "99.9"],
            ["--coding", "rate", "--T", "500", "--percentile", "99.9"])
SHARED = ["--episodes", "100", "--n-envs", "16"]


def commands(out: Path) -> list[list[str]]:
    """The benchmark commands, one per setting, over the shipped zips that exist."""
    zips = [str(DATA / f"dqn-MinAtar-{game}-v1.zip") for game in GAMES if (DATA / f"dqn-MinAtar-{game}-v1.zip").is_file()]
    return [[sys.executable, "-m", "dqn2snn_plugin.cli", "benchmark", *zips, *setting, *SHARED, "-o", str(out)]
            for setting in SETTINGS]


def table(out: Path) -> str:
    """Every cell of the folder, by game (GAMES order) then setting (SETTINGS order)."""
    cells = [BenchmarkCell.from_json(json.loads(line)) for line in (out / "cells.jsonl").read_text().splitlines()]
    order = {(coding, T): i for i, (coding, T) in enumerate((("binary", 8), ("rate", 64), ("rate", 500)))}
    cells.sort(key=lambda c: (GAMES.index(c.evaluation.header.env_id.split("/")[1].removesuffix("-v1")),
                              order.get((c.coding, c.evaluation.T), len(order))))
    return scores_table(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/competent_agents"))
    parser.add_argument("--table", action="store_true", help="print the folder's table only, run nothing")
    args = parser.parse_args()
    if not args.table:
        _common.run_commands(commands(args.out))
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
