"""Agreement of SNN and DQN greedy actions over T x percentile x initial membrane (issue 3's table).

Calibration and test states come from separate episodes of each DQN's own epsilon = 0.05 play.
One simulation of max(T) steps gives the exact readouts at every smaller T.

    python benchmarks/agreement_grid.py --out runs/agreement_grid
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common
from dqn2snn_plugin import convert
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.io.results import write_table
from dqn2snn_plugin.normalization import layer_scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser)
    parser.add_argument("--T", default="8,16,32,64,128,256,500", help="time steps per decision")
    parser.add_argument("--percentiles", default="99,99.9,99.99,max", help="normalisation percentiles")
    parser.add_argument("--inits", default="zero,half", help="initial membranes")
    parser.add_argument("--rank", default="nonzero", help="activations ranked for the percentile: nonzero or all")
    parser.add_argument("--calibration", type=int, default=5000, help="calibration states per game")
    parser.add_argument("--test", type=int, default=500, help="test states per game (other episodes)")
    parser.add_argument("--backend", default="spikingjelly", help="spikingjelly or snntorch")
    parser.add_argument("--out", type=Path, default=Path("runs/agreement_grid"), help="output folder")
    args = _common.parse(parser)
    Ts = [int(t) for t in args.T.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for game in _common.games(args):
        ckpt = _common.load_game(game, args)
        calibration, test = calibration_and_test_observations(ckpt, args.calibration, args.test)
        dqn_actions = ckpt.act(test)
        calibration_float = ckpt.prepare(calibration)
        for p in args.percentiles.split(","):
            scales = layer_scales(ckpt.q_network, calibration_float, p, rank=args.rank)
            for init in args.inits.split(","):
                start = time.perf_counter()
                snn = convert(ckpt, None, scales=scales, initial_membrane=init, backend=args.backend)
                readouts = snn.readouts_at(test, Ts)
                for T in Ts:
                    row = {"game": game, "percentile": p, "init": init, "T": T}
                    for name, values in readouts[T].items():
                        row[name] = round(float((values.argmax(1) == dqn_actions).float().mean()), 4)
                    rows.append(row)
                print(f"{game} p={p} init={init}: "
                      + " ".join(f"T{r['T']}={r['spikes+membrane']:.3f}" for r in rows[-len(Ts):])
                      + f" ({time.perf_counter() - start:.0f}s)", flush=True)
        write(args.out, rows, Ts)


def write(out: Path, rows: list[dict], Ts: list[int]) -> None:
    """grid.csv and grid.md (atomic): one row per game, p and V0; cells N + V % (spike count %)."""
    table = []
    for key in dict.fromkeys((r["game"], r["percentile"], r["init"]) for r in rows):  # in run order
        cells = {r["T"]: r for r in rows if (r["game"], r["percentile"], r["init"]) == key}
        table.append([*key, *(f"{100 * cells[T]['spikes+membrane']:.1f} ({100 * cells[T]['spikes']:.0f})" for T in Ts)])
    write_table(out, "grid", ["game", "p", "V0", *(f"T={T}" for T in Ts)], table)


if __name__ == "__main__":
    main()
