"""Agreement at a few time steps: the paper's method against each option of `dqn2snn_plugin.tuning`.

For every fixture game: calibration states (fitting) and held-out test states come from separate
episodes of the DQN's own play; each option is fitted on the calibration states only.

    python benchmarks/few_steps.py --out runs/few_steps
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from dqn2snn_plugin import convert, load_dqn
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.evaluation import write_table
from dqn2snn_plugin.normalization import layer_scales
from dqn2snn_plugin.tuning import calibrate_biases

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "atari-dqn"
# option name -> (initial membrane, calibrate hidden biases, calibrate output biases)
OPTIONS = {
    "paper (V0=0)": ("zero", False, False),
    "half threshold": ("half", False, False),
    "output offset": ("zero", False, True),
    "bias calibration": ("zero", True, True),
    "half + bias calibration": ("half", True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default="Breakout,Pong,Boxing,Atlantis,RoadRunner,BeamRider", help="fixture games")
    parser.add_argument("--T", default="4,8,16,32", help="time steps per decision")
    parser.add_argument("--percentile", default="99.9", help="normalisation percentile")
    parser.add_argument("--calibration", type=int, default=5000, help="calibration states (scales)")
    parser.add_argument("--fit", type=int, default=1000, help="calibration states used for bias calibration")
    parser.add_argument("--test", type=int, default=300, help="held-out test states")
    parser.add_argument("--out", type=Path, default=Path("runs/few_steps"), help="output folder")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    Ts = [int(t) for t in args.T.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for game in args.games.split(","):
        ckpt = load_dqn(FIXTURES / f"{game}NoFrameskip-v4.qnet.pt")
        calibration, test = calibration_and_test_observations(ckpt, args.calibration, args.test)
        actions = ckpt.act(test)
        scales = layer_scales(ckpt.q_network, ckpt.prepare(calibration), args.percentile)
        for name, (init, hidden, output) in OPTIONS.items():
            start = time.perf_counter()
            row = {"game": game, "option": name}
            for T in Ts:
                snn = convert(ckpt, None, scales=scales, initial_membrane=init)
                if hidden or output:
                    calibrate_biases(snn, ckpt, calibration[: args.fit], T, hidden=hidden, output=output)
                row[f"T={T}"] = round(float((snn.act(test, T) == actions).float().mean()), 4)
                row[f"sops T={T}"] = round(float(snn.last_stats.synaptic_ops.mean()))
            rows.append(row)
            print(game, name, {k: v for k, v in row.items() if k.startswith("T=")},
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
        write(args.out, rows)


def write(out: Path, rows: list[dict]) -> None:
    """few_steps.csv and few_steps.md (atomic): agreement % per option and T."""
    Ts = [k for k in rows[0] if k.startswith("T=")]
    table = [[r["game"], r["option"], *(f"{100 * r[t]:.1f}" for t in Ts)] for r in rows]
    write_table(out, "few_steps", ["game", "option", *Ts], table)


if __name__ == "__main__":
    main()
