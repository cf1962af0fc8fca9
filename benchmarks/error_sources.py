"""Where the SNN's error enters: per-layer rate error against the ANN, and the Q error against the gaps.

For the paper's conversion (p = 99.9, rank "nonzero") at each T and initial membrane, layer by layer
on held-out states:
- total: mean |r_l - clip(a_l / lambda_l, 0, 1)|, the SNN rate against the ANN's normalised
  activation (what the conversion promises);
- local: mean |r_l - clip(I_l, 0, 1)|, the rate against the ideal rate for the layer's *actual* mean
  input current I_l (the error this layer adds itself: quantisation to 1/T, the floor of a membrane
  starting at 0, timing); total - local is roughly what earlier layers passed on;
- advantage error: mean |A_snn - A_dqn| over actions (A = Q minus its mean over actions: an error
  shared by all actions cannot flip the greedy one), in units of the median gap between the DQN's
  best two actions, and the agreement.

    python benchmarks/error_sources.py --out runs/error_sources
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import _common  # benchmarks/ is on sys.path when this script runs
from dqn2snn_plugin import convert
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.io.results import write_table
from dqn2snn_plugin.normalization import record_activations
from dqn2snn_plugin.engine.rate import if_scan


@torch.no_grad()
def layer_errors(snn, checkpoint, states, T: int) -> tuple[list[float], list[float], torch.Tensor]:
    """Per-layer total and local rate errors, and the SNN's Q-values (N + V readout), from one simulation."""
    x = checkpoint.prepare(states)
    acts, _ = record_activations(checkpoint.q_network, x)
    first = snn.synapses[0](x)
    current = first.expand(T, *first.shape)  # analog input: the same current at every step
    totals, locals_ = [], []
    for index, synapse in enumerate(snn.synapses[1:]):
        spikes, _ = if_scan(current, torch.full_like(current[0], snn.initial_membrane))
        rate = spikes.mean(0)
        scale = snn.scales.hidden[index]
        target = (acts[index] / scale).clamp(0, 1)
        totals.append(float((rate - target).abs().mean()))
        locals_.append(float((rate - current.mean(0).clamp(0, 1)).abs().mean()))
        current = synapse(spikes.flatten(0, 1)).unflatten(0, spikes.shape[:2])
    return totals, locals_, current.mean(0)  # the integrated output current / T: "spikes+membrane"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser)
    parser.add_argument("--T", default="8,16,32,500", help="time steps per decision")
    parser.add_argument("--calibration", type=int, default=15000, help="calibration states (scales)")
    parser.add_argument("--test", type=int, default=300, help="held-out states measured")
    parser.add_argument("--out", type=Path, default=Path("runs/error_sources"), help="output folder")
    args = _common.parse(parser)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for game in _common.games(args):
        checkpoint = _common.load_game(game, args)
        calibration, test = calibration_and_test_observations(checkpoint, args.calibration, 1000)
        test = test[: args.test]
        q = checkpoint.q_values(test)
        top2 = q.topk(2, dim=1).values
        gap = float((top2[:, 0] - top2[:, 1]).median())
        for init in ("zero", "half"):
            snn = convert(checkpoint, calibration, initial_membrane=init)
            for T in (int(t) for t in args.T.split(",")):
                totals, locals_, values = layer_errors(snn, checkpoint, test, T)
                advantage_error = values - values.mean(1, keepdim=True) - (q - q.mean(1, keepdim=True))
                q_error = float(advantage_error.abs().mean()) / gap
                agreement = float((values.argmax(1) == q.argmax(1)).float().mean())
                rows.append([game, init, T, *(f"{t:.3f} / {l:.3f}" for t, l in zip(totals, locals_)),
                             f"{q_error:.2f}", f"{100 * agreement:.1f}"])
                print(*rows[-1], flush=True)
            write_table(args.out, "error_sources", HEADERS, rows)


HEADERS = ["game", "V0", "T", "conv1 total / local", "conv2", "conv3", "fc1", "advantage error / median gap", "agreement %"]


if __name__ == "__main__":
    main()
