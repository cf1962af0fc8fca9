"""A few unusual calibration states against the layer scales: the plain global percentile vs `state_trim`.

An episode's first three states have stack slots before its first frame. Filled with zeros (SB3's
VecFrameStack, the `paper` protocol) they drive some layers far above anything the rest of the game
does; filled with copies of the first frame (`paper,stack_fill=copy`) they do not. With 8 envs and
long episodes these starts are about 1.2% of the calibration set. For each fixture game this script
calibrates on both sets, with and without the trim, and measures rate-coded agreement (T=64, p=99.9)
on held-out states of the agent's own play (`paper` protocol, other episodes).

`PongMotion` is the Pong fixture made into a motion detector, as an agent trained on copy-filled
stacks may be: each first-layer filter loses its mean over the 4 frames, so a stack of 4 equal
frames (a copy-filled start) is silent while a zero-filled start is a burst of apparent motion.

    OMP_NUM_THREADS=1 python benchmarks/calibration_outliers.py --games Pong,Breakout,PongMotion --fixtures DIR
"""

from __future__ import annotations

import argparse

import _common  # benchmarks/ is on sys.path when this script runs
import torch

from dqn2snn_plugin.calibration import TEST_SEED_OFFSET, collect_observations
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.metrics import agreement
from dqn2snn_plugin.normalization import DEFAULT_STATE_TRIM, layer_scales, scale_shares

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser, games="Pong,Breakout,PongMotion", threads=1)
    parser.add_argument("--calibration", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--T", type=int, default=64)
    parser.add_argument("--percentile", type=float, default=99.9)
    args = _common.parse(parser)
    print("| game | calibration play | state_trim | hidden scales | share of states above each scale | agreement |")
    print("|---|---|---|---|---|---|")
    for game in _common.games(args):
        ckpt = _common.load_game(game.removesuffix("Motion"), args)
        if game.endswith("Motion"):
            with torch.no_grad():
                first = ckpt.q_network[0].weight  # [32, 4 frames, 8, 8]
                first -= first.mean(dim=1, keepdim=True)
        test = collect_observations(ckpt, args.test, seed=TEST_SEED_OFFSET)
        for protocol in ("paper", "paper,stack_fill=copy"):
            states = ckpt.prepare(collect_observations(ckpt, args.calibration, seed=0, protocol=protocol))
            for trim in (0.0, DEFAULT_STATE_TRIM):
                scales = layer_scales(ckpt.q_network, states, args.percentile, state_trim=trim)
                shares = scale_shares(ckpt.q_network, states, scales)
                snn = convert(ckpt, None, scales=scales, T=args.T)
                rate = agreement(ckpt, snn, test, T=args.T).rate
                print(f"| {game} | {protocol} | {trim:g}% | {[round(float(s), 3) for s in scales.hidden]} | "
                      f"{[f'{100 * s:.1f}%' for s in shares]} | {100 * rate:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
