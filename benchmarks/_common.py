"""What the user benchmarks share: the games they run, where each game's DQN comes from, and threads.

A game's checkpoint is found in this order:

1. `--fixtures DIR`, or the environment variable `DQN2SNN_FIXTURES`: `DIR/<Game>NoFrameskip-v4.qnet.pt`,
   a folder of your own QNetwork state dicts (docs/results.md was measured on six weak DQNs that are
   not published);
2. Breakout: the DQN shipped with the package (`dqn2snn_plugin/data/BreakoutNoFrameskip-v4.qnet.pt`,
   the same weights as the results' Breakout fixture);
3. any other game: RL-Zoo's `hf://sb3/dqn-<Game>NoFrameskip-v4` through `load_dqn`'s hub loader (the
   `hub` extra and network access; RL-Zoo's DQNs are stronger players, so their numbers differ).

A checkpoint that cannot be had ends the script with one line naming the game and what to do.
Scripts import this module as `_common`: Python puts the script's folder on `sys.path`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import torch

from dqn2snn_plugin import load_dqn
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.errors import Dqn2SnnError

GAMES = "Breakout,Pong,Boxing,Atlantis,RoadRunner,BeamRider"
FIXTURES_ENV = "DQN2SNN_FIXTURES"
SHIPPED = Path(str(files("dqn2snn_plugin") / "data" / "BreakoutNoFrameskip-v4.qnet.pt"))


def add_game_options(parser: argparse.ArgumentParser, *, games: str | None = GAMES, threads: int | None = None) -> None:
    """`--games` (comma-separated names; `games=None` leaves it to the script), `--fixtures` and `--threads`
    (default `threads`, else every CPU)."""
    if games is not None:
        parser.add_argument("--games", default=games, help="comma-separated games, e.g. Breakout,Pong")
    parser.add_argument("--fixtures", type=Path, default=os.environ.get(FIXTURES_ENV) or None,
                        help=f"folder of <Game>NoFrameskip-v4.qnet.pt (default ${FIXTURES_ENV}; without it: "
                             "Breakout shipped with the package, other games from hf://sb3)")
    parser.add_argument("--threads", type=int, default=threads or os.cpu_count() or 1, help="torch.set_num_threads")


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line, refuse a `--fixtures` that is not a folder (one line, exit status 2),
    and set torch's threads."""
    args = parser.parse_args()
    if args.fixtures is not None and not Path(args.fixtures).is_dir():
        parser.error(f"--fixtures {args.fixtures}: no such folder")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    return args


def games(args: argparse.Namespace) -> list[str]:
    """The game names of `--games`, in order."""
    return [game.strip() for game in args.games.split(",") if game.strip()]


def checkpoint_source(game: str, fixtures: Path | None) -> Path | str:
    """Where `game`'s DQN comes from: the fixtures folder, else the shipped Breakout, else the hub."""
    env_id = f"{game}NoFrameskip-v4"
    if fixtures is not None:
        return Path(fixtures) / f"{env_id}.qnet.pt"
    if SHIPPED.name == f"{env_id}.qnet.pt":
        return SHIPPED
    return f"hf://sb3/dqn-{env_id}"


def load_game(game: str, args: argparse.Namespace, **options: object) -> DQNCheckpoint:
    """`load_dqn` of `game`'s checkpoint (`options`: `device=...`); a checkpoint that cannot be had ends
    the script with one line."""
    source = checkpoint_source(game, args.fixtures)
    try:
        return load_dqn(source, **options)
    except Dqn2SnnError as error:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {game}: {error} "
                 f"(give --fixtures DIR or ${FIXTURES_ENV} with {game}NoFrameskip-v4.qnet.pt in it)")


def run_commands(commands: list[list[str]]) -> None:
    """Run each command (a `dqn2snn` benchmark as a subprocess), echoed first; stop at the first that fails."""
    for command in commands:
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
