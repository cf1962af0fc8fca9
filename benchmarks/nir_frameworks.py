"""The converted policy run from its .nir file in SpikingJelly, snnTorch and Sinabs: agreement with ours and the DQN.

For each fixture game the SNN is `convert(ckpt, calibration, percentile=p, T=T)` (rate coding, the
paper's method), written with `save_nir`, and loaded back by each framework's own importer through
`dqn2snn_plugin.adapters.nir.load_nir` (with its corrections), in `--dtype` (float32: what a user runs;
float64: ties never decided by rounding). Agreement of greedy actions on `--states` held-out states, with
our `SpikingQNetwork` (same dtype) and with the DQN. Frameworks that are not installed are skipped.

    nice python benchmarks/nir_frameworks.py --out runs/nir_frameworks
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from dqn2snn_plugin import save_nir
from dqn2snn_plugin.adapters.nir import FRAMEWORKS, load_nir, run_nir
from dqn2snn_plugin.errors import ConfigError
from dqn2snn_plugin.io.results import write_json, write_table
import _common  # benchmarks/ is on sys.path when this script runs
from nir_weight_bits import game_parser, game_snns


def main() -> None:
    parser = game_parser(__doc__.splitlines()[0], "runs/nir_frameworks", 300)
    parser.add_argument("--states", type=int, default=100, help="the first this many held-out states are judged")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="simulation dtype")
    args = _common.parse(parser)
    dtype = getattr(torch, args.dtype)
    rows, records = [], {}
    for game, checkpoint, test, snn in game_snns(args):
        test = test[: args.states]
        snn = snn.to(dtype)
        ours = torch.cat([snn.act(test[i : i + 50]) for i in range(0, len(test), 50)])
        dqn = checkpoint.act(test)
        records[game] = {"ours_vs_dqn": float((ours == dqn).float().mean())}
        row = [game, f"{100 * records[game]['ours_vs_dqn']:.1f}"]
        with tempfile.TemporaryDirectory() as tmp:
            save_nir(snn, Path(tmp) / "snn.nir")
            for framework in FRAMEWORKS:
                try:
                    net = load_nir(Path(tmp) / "snn.nir", framework, dtype=dtype)
                except ConfigError as exc:  # not installed
                    print(f"{framework}: skipped ({exc})")
                    row.append("not installed")
                    continue
                theirs = torch.cat([run_nir(net, test[i : i + 50])[0].argmax(1) for i in range(0, len(test), 50)])
                same, with_dqn = float((theirs == ours).float().mean()), float((theirs == dqn).float().mean())
                records[game][framework] = {"agreement_ours": same, "agreement_dqn": with_dqn}
                row.append(f"{100 * same:.1f} ({100 * with_dqn:.1f})")
                print(f"{game} {framework}: ours {100 * same:.1f}% DQN {100 * with_dqn:.1f}%", flush=True)
        rows.append(row)
        write_json(args.out / "nir_frameworks.json", {"settings": {k: str(v) for k, v in vars(args).items()},
                                                      "games": records})
        write_table(args.out, "nir_frameworks", ["game", "ours vs DQN", *FRAMEWORKS], rows)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
