"""Distillation settings compared on one game: test agreement of the distilled SNN at T.

Each run distils the fixture DQN of --game on its 15,000 cached calibration states with `distill`'s
defaults overridden by --options (JSON), converts it, and measures agreement with the original DQN's
greedy action on the same 1,000 held-out test states as `few_steps.py`. One JSON line per run is
appended to --out, so runs with different settings collect in one file.

    python benchmarks/distill_options.py --game Pong --options '{"margin": 0, "batch_size": 128}'
    python benchmarks/distill_options.py --game Pong --options '{"margin": 3}' --out runs/distill_options.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common  # benchmarks/ is on sys.path when this script runs
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.improve.distillation import distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Pong", help="the game, e.g. Pong")
    _common.add_game_options(parser, games=None, threads=1)
    parser.add_argument("--T", type=int, default=16, help="time steps per decision")
    parser.add_argument("--options", default="{}", help="JSON object of distill keyword arguments")
    parser.add_argument("--calibration", type=int, default=15000, help="calibration states")
    parser.add_argument("--test", type=int, default=1000, help="held-out test states")
    parser.add_argument("--out", type=Path, default=Path("runs/distill_options.jsonl"), help="JSON lines, appended")
    args = _common.parse(parser)
    options = json.loads(args.options)
    checkpoint = _common.load_game(args.game, args)
    calibration, test = calibration_and_test_observations(checkpoint, args.calibration, args.test)
    start = time.perf_counter()
    result = distill(checkpoint, calibration, args.T, **options)
    seconds = time.perf_counter() - start
    agreement = float((result.to_snn().act(test, args.T) == checkpoint.act(test)).float().mean())
    record = {"game": args.game, "T": args.T, "calibration": args.calibration, "options": options,
              "agreement_test": agreement, "fit_seconds": seconds,
              "validation_agreement": [round(row["validation_agreement"], 3) for row in result.history]}
    print(json.dumps(record), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as handle:  # one line per run: a crash loses at most this run
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
