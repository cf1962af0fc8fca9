"""Binary coding inside the frameworks: SpikingJelly's Converter graph and snnTorch against our binary SNN.

For each fixture game: scales from `--calibration` states of the DQN's own play (percentile 99.99, one
per channel, T = 8 bits); on `--test` held-out states (other episodes), the greedy actions of
- SpikingJelly's `ann2snn.Converter(recipe=BinaryCodingRecipe(...))` graph (FewSpikeNode, single step),
- `convert(..., coding="binary", backend="spikingjelly")` run on its FewSpikeNodes,
- `convert(..., coding="binary", backend="snntorch")` (BinaryFewSpikes),
are compared with our binary SNN (`binary_coding.fire`, the CPU default), in float32 (as deployed) and
float64, with the largest Q-value difference and whether every layer's spike counts are equal.

    python benchmarks/binary_frameworks.py --out runs/binary_frameworks.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import torch
from spikingjelly.activation_based import ann2snn

import _common  # benchmarks/ is on sys.path when this script runs
from dqn2snn_plugin import convert
from dqn2snn_plugin.adapters.spikingjelly import BinaryCodingRecipe, SpikingJellyBackend
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.io.results import markdown_table, write_json


def compare(checkpoint, calibration, test, T: int) -> dict:
    """Agreement (%) of each framework path with our binary SNN, max |dQ|, equal spike counts."""
    ours = convert(checkpoint, calibration, percentile=99.99, channel_wise=True, coding="binary", T=T)
    q = ours(test)
    spikes = ours.last_stats.spikes
    recipe = BinaryCodingRecipe(checkpoint.prepare(calibration), bits=T, percentile=99.99, channel_wise=True)
    graph = ann2snn.Converter(recipe=recipe).convert(checkpoint.q_network)
    with torch.no_grad():
        q_graph = graph(checkpoint.prepare(test))
    few_spike = copy.deepcopy(ours)
    few_spike.backend = SpikingJellyBackend("spikingjelly")
    snntorch = convert(checkpoint, None, scales=ours.scales, coding="binary", T=T, backend="snntorch")
    row = {}
    for name, net in (("fewspike", few_spike), ("snntorch", snntorch)):
        q_net = net(test)
        row[name] = {"agreement": round(100 * float((q_net.argmax(1) == q.argmax(1)).float().mean()), 2),
                     "max_dq": float((q_net - q).abs().max()),
                     "equal_spikes": all(torch.equal(a, b) for a, b in zip(net.last_stats.spikes, spikes))}
    row["graph"] = {"agreement": round(100 * float((q_graph.argmax(1) == q.argmax(1)).float().mean()), 2),
                    "max_dq": float((q_graph - q).abs().max())}
    row["dqn_agreement"] = round(100 * float((checkpoint.act(test) == q.argmax(1)).float().mean()), 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser)
    parser.add_argument("--calibration", type=int, default=400, help="calibration states per game")
    parser.add_argument("--test", type=int, default=300, help="held-out test states per game")
    parser.add_argument("--T", type=int, default=8, help="bits per activation")
    parser.add_argument("--out", type=Path, default=Path("runs/binary_frameworks.json"), help="JSON result")
    args = _common.parse(parser)
    results, rows = {}, []
    for game in _common.games(args):
        checkpoint = _common.load_game(game, args)
        calibration, test = calibration_and_test_observations(checkpoint, args.calibration, args.test, n_envs=4)
        double = dataclasses.replace(checkpoint, q_network=copy.deepcopy(checkpoint.q_network).double())
        results[game] = {"float32": compare(checkpoint, calibration, test, args.T),
                         "float64": compare(double, calibration, test, args.T)}
        for precision, r in results[game].items():
            rows.append([game, precision, r["graph"]["agreement"], f"{r['graph']['max_dq']:.1e}",
                         r["fewspike"]["agreement"], r["fewspike"]["equal_spikes"], r["snntorch"]["agreement"],
                         r["snntorch"]["equal_spikes"], f"{r['snntorch']['max_dq']:.1e}", r["dqn_agreement"]])
        print(rows[-2], rows[-1], flush=True)
    write_json(args.out, {"settings": vars(args) | {"fixtures": str(args.fixtures), "out": str(args.out)},
                          "results": results})
    print(markdown_table(["game", "precision", "SJ graph agr. %", "graph max dQ", "FewSpikeNode agr. %",
                          "equal spikes", "snnTorch agr. %", "equal spikes", "snnTorch max dQ", "vs DQN %"], rows))


if __name__ == "__main__":
    main()
