"""Binary spike coding without training: agreement and cost per bit count T, percentile and scale granularity.

For each fixture game the SNN is `convert(ckpt, states, percentile=p, channel_wise=cw, coding="binary", T=T)`
with scales from 4,096 of the first 10,000 calibration states. Its agreement with the DQN's greedy action
is measured on calibration states 12,000-14,000 (`--on validation`: never used for scales, so settings
can be chosen on them) or on the 1,000 held-out test states of every other table (`--on test`), with
the synaptic operations and spikes per decision on those states.

    python benchmarks/binary_coding.py --out runs/binary_coding_validation.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import _common  # benchmarks/ is on sys.path when this script runs
from dqn2snn_plugin import convert
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.io.results import write_json
from dqn2snn_plugin.normalization import layer_scales
from few_steps import test_agreement  # benchmarks/ is on sys.path when this script runs


def measure(checkpoint, snn, states: np.ndarray, actions: torch.Tensor) -> dict:
    """Agreement %, synaptic operations and spikes per decision of `snn` on `states` (few_steps' measurement)."""
    result = test_agreement(checkpoint, snn, states, actions, snn.T)
    return {"agreement": round(100 * result["agreement_test"], 1),
            "synaptic_ops": round(result["test_synaptic_ops_per_decision"]),
            "spikes": round(result["test_spikes_per_decision"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser)
    parser.add_argument("--T", default="4,6,8,10,12,16", help="bits per activation (= time steps per layer)")
    parser.add_argument("--percentiles", default="99.9,99.99,max", help="normalisation percentiles")
    parser.add_argument("--on", choices=["validation", "test"], default="validation", help="which states to judge on")
    parser.add_argument("--out", type=Path, default=Path("runs/binary_coding_validation.json"), help="JSON result")
    args = _common.parse(parser)
    results = {}
    for game in _common.games(args):
        checkpoint = _common.load_game(game, args)
        calibration, test = calibration_and_test_observations(checkpoint, 15000, 1000)
        fit = calibration[np.random.default_rng(0).permutation(10000)[:4096]]
        judged = test if args.on == "test" else calibration[12000:14000]
        actions = checkpoint.act(judged)
        rows = {}
        for p in args.percentiles.split(","):
            for channel_wise in (True, False):
                scales = layer_scales(checkpoint.q_network, checkpoint.prepare(fit), p, channel_wise=channel_wise)
                for T in map(int, args.T.split(",")):
                    snn = convert(checkpoint, None, scales=scales, coding="binary", T=T)
                    rows[f"p={p} {'per channel' if channel_wise else 'per layer'} T={T}"] = measure(
                        checkpoint, snn, judged, actions)
        results[game] = rows
        print(game, json.dumps(rows), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"judged_on": args.on, "games": results})


if __name__ == "__main__":
    main()
