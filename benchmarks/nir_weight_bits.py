"""What integer weights cost: agreement of the NIR-exported SNN at 8, 6 and 4 weight bits against float weights.

For each fixture game the SNN is `convert(ckpt, calibration, percentile=p, T=T)` (rate coding, analog
input, layer-wise scales, zero initial membrane: the paper's method) on `--calibration` states of the
DQN's own play. It is exported with `to_nir(snn, weight_bits=b, per_channel=...)` and rebuilt with
`from_nir`, so what is measured is exactly what the .nir file holds. Agreement (greedy action equal,
N + V readout) is measured on `--test` held-out states from other episodes, against the DQN and against
the float-weight SNN; and, to tell the weights' share from the spiking dynamics', the agreement with the
DQN of the non-spiking network with the same quantised weights (ReLU between the folded stages: with
float weights it is the DQN itself, since ReLU(x) / lambda = ReLU(x / lambda)).

    nice python benchmarks/nir_weight_bits.py --out runs/nir_weight_bits
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

import _common  # benchmarks/ is on sys.path when this script runs
from dqn2snn_plugin import convert, from_nir, to_nir
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.io.results import write_json, write_table


def actions(snn, states, batch: int = 100) -> torch.Tensor:
    return torch.cat([snn.act(states[i : i + batch]) for i in range(0, len(states), batch)])


@torch.no_grad()
def relu_actions(snn, states) -> torch.Tensor:
    """Greedy actions of the non-spiking network of `snn`'s folded weights (ReLU between its stages)."""
    layers = [layer for stage in snn.synapses[:-1] for layer in (*stage, nn.ReLU())] + list(snn.synapses[-1])
    return nn.Sequential(*layers)(snn._prepare(states)).argmax(1)


def game_parser(description: str, out: str, test: int) -> argparse.ArgumentParser:
    """The options both NIR benchmarks share: games, SNN settings, state counts, threads, output."""
    parser = argparse.ArgumentParser(description=description)
    _common.add_game_options(parser, threads=1)
    parser.add_argument("--T", type=int, default=64, help="time steps per decision")
    parser.add_argument("--percentile", default="99.9", help="normalisation percentile")
    parser.add_argument("--calibration", type=int, default=2000, help="calibration states per game")
    parser.add_argument("--test", type=int, default=test, help="held-out states per game")
    parser.add_argument("--out", type=Path, default=Path(out), help="output directory")
    return parser


def game_snns(args: argparse.Namespace):
    """Per game: (name, checkpoint, held-out states, the rate-coded SNN of the paper's method)."""
    args.out.mkdir(parents=True, exist_ok=True)
    for game in _common.games(args):
        checkpoint = _common.load_game(game, args)
        calibration, test = calibration_and_test_observations(checkpoint, args.calibration, args.test)
        yield game, checkpoint, test, convert(checkpoint, calibration, percentile=args.percentile, T=args.T)


def main() -> None:
    parser = game_parser(__doc__.splitlines()[0], "runs/nir_weight_bits", 300)
    parser.add_argument("--bits", default="8,6,4", help="weight bits to measure")
    args = _common.parse(parser)
    bits = [int(b) for b in args.bits.split(",")]
    grids = [(None, False)] + [(b, per_channel) for b in bits for per_channel in (False, True)]
    headers = ["game", "float"] + [f"{b} bit {'channel' if c else 'layer'}" for b, c in grids[1:]]
    rows, records = [], {}
    for game, checkpoint, test, snn in game_snns(args):
        dqn = checkpoint.act(test)
        float_actions = None
        cells = []
        for weight_bits, per_channel in grids:
            exported = from_nir(to_nir(snn, weight_bits=weight_bits, per_channel=per_channel))
            chosen = actions(exported, test)
            relu = float((relu_actions(exported, test) == dqn).float().mean())
            float_actions = chosen if weight_bits is None else float_actions
            with_dqn = float((chosen == dqn).float().mean())
            with_float = float((chosen == float_actions).float().mean())
            cells.append({"weight_bits": weight_bits or 0, "per_channel": per_channel,
                          "agreement_dqn": with_dqn, "agreement_float_snn": with_float, "relu_agreement_dqn": relu})
            print(f"{game} bits={weight_bits} per_channel={per_channel}: DQN {100 * with_dqn:.1f}% "
                  f"float SNN {100 * with_float:.1f}% ReLU net {100 * relu:.1f}%", flush=True)
        records[game] = cells
        rows.append([game] + [f"{100 * c['agreement_dqn']:.1f} / {100 * c['agreement_float_snn']:.1f} / "
                              f"{100 * c['relu_agreement_dqn']:.1f}" for c in cells])
        write_json(args.out / "nir_weight_bits.json", {"settings": {k: str(v) for k, v in vars(args).items()},
                                                        "games": records})
        write_table(args.out, "nir_weight_bits", headers, rows)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
