"""The event-driven cost table of docs/results.md ("Energy per decision on whole games", issue 26).

Whole games (30 per player, epsilon = 0.05, the 18,000-step cap, seed 0, 5,000 calibration states from
separate episodes), run as the user would: one `dqn2snn benchmark` command per setting, each into its
own resumable folder under --out (a folder's config.json pins the settings its cells share, and the
residual carry is such a setting). Every cell prices the SNN's decisions on the states it visited with
the cost model (`dqn2snn_plugin.costs`, int8 weights and 32-bit membranes, weights read per event,
Horowitz 45 nm) against the same DQN in int8 and fp32 (`--cost-precision int8`).

Settings (folder: flags):
- binary8: binary coding, T = 8 bits, p = 99.99, one scale per channel (the README's headline);
- delta8, delta10: the same quantised network sent as changes between observations (`--coding delta`);
- rate64: the paper's rate coding, T = 64, p = 99.9, membranes from zero;
- rate64_half: the same from half a threshold (`--residual-carry 0`: CRPI's fresh start, no carry);
- rate64_crpi: CRPI's residual carry at scale 0.25 (`--residual-carry 0.25`).

Atari: the six fixture DQNs (`--fixtures`, see benchmarks/_common.py), every setting but the half start,
run on Breakout only (a rate cell takes 4-21 minutes a game on one core). MinAtar: the five shipped
agents, every setting.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice python benchmarks/event_costs.py --fixtures FIXTURES [--only NAME] [--table]

Without --fixtures the Atari games come from `_common` (the shipped Breakout, RL-Zoo's DQNs from the hub).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common
from dqn2snn_plugin.experiments.records import BenchmarkCell
from dqn2snn_plugin.experiments.report import pct, score

MINATAR = Path(__file__).resolve().parent.parent / "dqn2snn_plugin" / "data" / "minatar"
ATARI = ("Breakout", "Pong", "Boxing", "Atlantis", "RoadRunner", "BeamRider")
MINATAR_GAMES = ("Breakout", "SpaceInvaders", "Asterix", "Seaquest", "Freeway")
BINARY = ["--percentile", "99.99", "--channel-wise"]
RATE = ["--coding", "rate", "--T", "64", "--percentile", "99.9"]
SETTINGS = {  # name: (flags, Atari games it runs on)
    "binary8": (["--coding", "binary", "--T", "8", *BINARY], ATARI),
    "delta8": (["--coding", "delta", "--T", "8", *BINARY], ATARI),
    "delta10": (["--coding", "delta", "--T", "10", *BINARY], ATARI),
    "rate64": (RATE, ATARI),
    "rate64_half": ([*RATE, "--residual-carry", "0"], ATARI[:1]),
    "rate64_crpi": ([*RATE, "--residual-carry", "0.25"], ATARI),
}
SHARED = ["--episodes", "30", "--max-steps", "18000", "--cost-precision", "int8"]


def commands(out: Path, fixtures: Path | None, only: list[str]) -> list[list[str]]:
    """One benchmark command per setting and family (Atari fixtures found, shipped MinAtar zips)."""
    runs = []
    for name, (flags, atari_games) in SETTINGS.items():
        if only and name not in only:
            continue
        atari = [str(_common.checkpoint_source(game, fixtures)) for game in atari_games]
        minatar = [str(MINATAR / f"dqn-MinAtar-{g}-v1.zip") for g in MINATAR_GAMES]
        for family, checkpoints, extra in (("atari", atari, []), ("minatar", minatar, ["--n-envs", "16"])):
            if checkpoints:
                runs.append([sys.executable, "-m", "dqn2snn_plugin.cli", "benchmark", *checkpoints, *flags, *SHARED,
                             *extra, "-o", str(out / f"{family}_{name}")])
    return runs


def _row(name: str, cell: BenchmarkCell) -> list[str]:
    evaluation, snn = cell.evaluation, cell.evaluation.snn
    cost = snn.cost
    return [evaluation.header.env_id, name, score(evaluation.dqn_score), score(snn.score),
            pct(snn.agreement_snn_visited["spikes+membrane"].rate),
            pct(evaluation.agreement_dqn_visited["spikes+membrane"].rate),
            f"{snn.agreement_snn_visited['spikes+membrane'].n_states:,}",
            f"{cost.snn.total.synaptic_events:,.0f}", f"{cost.snn.energy_pj / 1e6:.3g}", f"{cost.ratio_int8:.3g}",
            f"{cost.dqn_int8.energy_pj / 1e6:.3g} / {cost.dqn_fp32.energy_pj / 1e6:.3g}"]


def table(out: Path) -> str:
    """Every cell under `out`, by family, game, then setting."""
    rows = []
    for family, games in (("atari", ATARI), ("minatar", MINATAR_GAMES)):
        for game in games:
            for name in SETTINGS:
                path = out / f"{family}_{name}" / "cells.jsonl"
                for line in path.read_text().splitlines() if path.is_file() else []:
                    cell = BenchmarkCell.from_json(json.loads(line))
                    if game in cell.evaluation.header.env_id and cell.evaluation.snn.cost is not None:
                        rows.append(_row(name, cell))
    head = ["game", "SNN", "DQN score", "SNN score", "agreement SNN-visited", "agreement DQN-visited",
            "SNN-visited states", "synaptic events per decision", "SNN energy per decision (µJ)",
            "÷ int8 DQN", "DQN int8 / fp32 (µJ)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser, games=None, threads=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/event_costs"))
    parser.add_argument("--only", action="append", default=[], choices=list(SETTINGS),
                        help="run only this setting (repeatable)")
    parser.add_argument("--table", action="store_true", help="print the table of what is in --out, run nothing")
    args = _common.parse(parser)
    if not args.table:
        _common.run_commands(commands(args.out, args.fixtures, args.only))
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
