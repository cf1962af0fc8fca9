"""How many rate levels per neuron does each game's agreement need? A training-free precision study.

An IF layer simulated for T steps from a half-threshold membrane expresses its rate in about T
levels; the clip-floor-shift (QCFS) copy of the DQN models exactly that. This script takes the copy
`distill` starts from (`distill(..., epochs=0, snn_epochs=0).quantised`: per-channel thresholds at
the 99.9th percentile of 4,096 states of its training split) and measures its agreement with the
DQN's greedy action on the held-out test states when its activations have L levels:
- every layer at L in --levels ("inf": clipping only, no quantisation);
- one layer at a time refined to unlimited precision, the others at --base levels: where the
  rounding error that flips actions enters.
It needs no training and no simulation (a few seconds a game), so it tells beforehand which T a
game's agreement target asks for; `distill` then recovers a few points at that T (docs/results.md).

    python benchmarks/precision_needed.py --out runs/precision_needed.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import _common  # benchmarks/ is on sys.path when this script runs
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.improve.distillation import ClipFloorShift, distill
from dqn2snn_plugin.io.results import write_json

UNLIMITED = 2**30  # levels standing in for "no quantisation": steps far below float32's resolution of a rate


def agreement_at(copy: torch.nn.Sequential, levels: list[int], x: torch.Tensor, actions: torch.Tensor) -> float:
    """% of states where the copy, with its i-th activation at levels[i], picks the DQN's action."""
    activations = [layer for layer in copy if isinstance(layer, ClipFloorShift)]
    for activation, level in zip(activations, levels):
        activation.levels = level
    with torch.no_grad():
        chosen = torch.cat([copy(x[i : i + 250]).argmax(1) for i in range(0, len(x), 250)])
    return round(100 * float((chosen == actions).float().mean()), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser)
    parser.add_argument("--levels", default="16,32,64,128,256,inf", help="levels of every layer, one row each")
    parser.add_argument("--base", type=int, default=16, help="levels of the other layers when one is refined")
    parser.add_argument("--distilled", type=int, default=0,
                        help="T: study the copy that distill(ckpt, states, T) trains (0: the untrained copy)")
    parser.add_argument("--calibration", type=int, default=15000, help="calibration states (the same as few_steps.py)")
    parser.add_argument("--test", type=int, default=1000, help="held-out test states")
    parser.add_argument("--out", type=Path, default=Path("runs/precision_needed.json"), help="JSON result")
    args = _common.parse(parser)
    levels = [UNLIMITED if level == "inf" else int(level) for level in args.levels.split(",")]
    results = {}
    for game in _common.games(args):
        checkpoint = _common.load_game(game, args)
        calibration, test = calibration_and_test_observations(checkpoint, args.calibration, args.test)
        trained = {} if args.distilled else {"epochs": 0, "snn_epochs": 0}  # untrained: the starting copy
        copy = distill(checkpoint, calibration, args.distilled or args.base, **trained).quantised
        x, actions = checkpoint.prepare(test), checkpoint.act(test)
        n = sum(isinstance(layer, ClipFloorShift) for layer in copy)
        row = {"all": {("inf" if level == UNLIMITED else str(level)): agreement_at(copy, [level] * n, x, actions)
                       for level in levels}}
        row["one_layer_unlimited"] = [agreement_at(copy, [UNLIMITED if i == j else args.base for i in range(n)], x,
                                                   actions) for j in range(n)]
        results[game] = row
        print(game, json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"base_levels": args.base, "test_states": args.test, "distilled_T": args.distilled,
                          "games": results})


if __name__ == "__main__":
    main()
