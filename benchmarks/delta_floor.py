"""How far below exact delta coding can an SNN's events go and still agree with the DQN? (issue 26)

Delta coding (`--coding delta`) sends, between two observations of one game, every change of the quantised
network's levels. On games where much of the screen moves, fc1's weight reads dominate its energy: each
changed conv3 neuron reads its 512 fc1 weights (docs/results.md, "Energy per decision on whole games"). This
script asks whether sending fewer changes would do, on consecutive held-out states of the DQN's own play
(`calibration_and_heldout_states`, the benchmark's draws), with two ways of sending less:

- fewer bits: the spiking layers after the first keep T bits, except one (`--bits-layer`, conv3 by default)
  that gets fewer, so small moves of its neurons change no level (still a stateless quantised network);
- a dead zone: each neuron sends its level only when it moved by at least theta levels from what it last
  sent (Loihi 2's sigma-delta threshold); the next layer integrates what was sent, so decisions drift from
  the quantised network's by what was held back.

Each variant is simulated over the same states, the `--n-envs` games side by side (state i belongs to game
i mod n_envs, as drawn), and reported as agreement with the DQN's greedy actions, synaptic events per
decision into each weighted stage, and the energy of those events (one int8 multiply-accumulate and one int8
weight read per event, priced by `HOROWITZ_45NM` by the stage's weight bytes) against the whole int8 DQN's
(`costs.dqn_cost`). Membrane traffic, which the whole-game table adds, is left out: it is under 10% of
delta coding's energy on these games. The first variant (all layers at T bits, no dead zone) is delta
coding itself and is checked against the SNN's own actions. The end of an episode is not known here, so
the first state of a new game counts as changes from the last of the old one (at most 8 of 4,000 states).

Before the sweep, the script reads the whole-game delta cells (`--cells`, by default the 10-bit cells of
benchmarks/event_costs.py) and prints, per game, fc1's share alone of the int8 DQN's energy (a floor for any
coding that reads a changed conv3 neuron's fc1 weights per event, whatever the other layers cost) and the
whole ratio re-priced with each stage's weights read at most once per decision (the least of the SNN's
per-event reads and the int8 DQN's reads of that stage: what a chip that keeps each kernel while it
serves that kernel's events would pay).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/delta_floor.py --fixtures FIXTURES [--games Boxing,...]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import _common
import torch
from torch import nn

from dqn2snn_plugin import convert
from dqn2snn_plugin.binary_coding import MAX_BITS
from dqn2snn_plugin.costs import dqn_cost
from dqn2snn_plugin.energy import HOROWITZ_45NM
from dqn2snn_plugin.errors import ResultsError
from dqn2snn_plugin.engine import delta
from dqn2snn_plugin.engine.stats import fan_out, weighted
from dqn2snn_plugin.experiments.evaluation import calibration_and_heldout_states
from dqn2snn_plugin.experiments.records import BenchmarkCell
from dqn2snn_plugin.experiments.settings import RunSettings

GAMES = "Boxing,Atlantis,RoadRunner,BeamRider"
BITS = (8, 7, 6, 5, 4)
DEAD_ZONES = ((2, 2, 2), (2, 4, 4), (4, 8, 8), (8, 16, 16))  # theta per spiking layer (conv1, conv2, conv3)


class Variant:
    """Levels per spiking layer and the dead zone of each (1: every change is sent)."""

    def __init__(self, name: str, bits: list[int], theta: list[int]) -> None:
        self.name, self.levels, self.theta = name, [2.0**b - 1 for b in bits], [float(t) for t in theta]


def variants(T: int, n_spiking: int, layer: int) -> list[Variant]:
    """Delta coding at T bits, then fewer bits at `layer` (0-based spiking layer), then the dead zones."""
    out = [Variant(f"delta T={T}", [T] * n_spiking, [1] * n_spiking)]
    for bits in BITS:
        if bits < T:
            out.append(Variant(f"spiking layer {layer + 1} at {bits} bits", [bits if i == layer else T
                                                                             for i in range(n_spiking)], [1] * n_spiking))
    for zone in DEAD_ZONES:
        theta = [zone[min(i, len(zone) - 1)] for i in range(n_spiking - 1)] + [1]  # fc1's changes reach only the output
        out.append(Variant("dead zone " + "/".join(str(t) for t in theta), [T] * n_spiking, theta))
    return out


def float64_stages(net, T: int) -> list[nn.Module]:
    """The SNN's folded stages in float64 with delta coding's rounded weights (`engine.delta.rounded`), so
    that the first variant is delta coding's quantised network exactly."""
    stages = []
    for stage, (w, b) in zip(net.synapses, delta.rounded(net, T)):
        stage = copy.deepcopy(stage).double()
        weighted(stage).weight.data.copy_(w)
        if weighted(stage).bias is not None:
            weighted(stage).bias.data.copy_(b)
        stages.append(stage)
    return stages


def fan_outs(net) -> list[torch.Tensor]:
    """Each stage's synapses per input neuron (float64): the observation's, then the engine's own count of
    each spiking layer's (`engine.stats.Counter`)."""
    first = fan_out(net.synapses[0], tuple(net.observation_shape))
    return [fan.detach().double().cpu() for fan in (first, *net.engine.counter.fan_outs)]


@torch.no_grad()
def simulate(stages: list[nn.Module], start: float, states: torch.Tensor, n_envs: int, variant: Variant,
             fans: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy actions [N] and mean synaptic events per decision into each stage, over consecutive states
    (`stages`: `float64_stages`, `start`: the SNN's initial membrane). Every game starts from the levels of
    a blank (all-zero) observation, as delta coding's fresh state does."""

    def decide(x: torch.Tensor, sent: list[torch.Tensor] | None, events: torch.Tensor) -> tuple[torch.Tensor, list]:
        h, now = x, []
        for i, (stage, levels, theta) in enumerate(zip(stages, variant.levels, variant.theta)):
            q = (stage(h) * levels + start).floor().clamp(0, levels)
            last = q if sent is None else sent[i]
            moved = (q - last).abs() >= theta
            now.append(torch.where(moved, q, last))
            events[i + 1] += (moved.double() * fans[i + 1]).sum()
            h = now[-1] / levels
        return stages[-1](h).argmax(1), now

    previous = torch.zeros_like(states[:n_envs])
    _, sent = decide(previous, None, torch.zeros(len(stages), dtype=torch.float64))
    actions, events = [], torch.zeros(len(stages), dtype=torch.float64)
    for first in range(0, len(states), n_envs):
        x = states[first:first + n_envs]
        events[0] += ((x != previous[: len(x)]).double() * fans[0]).sum()
        chosen, sent = decide(x, [s[: len(x)] for s in sent], events)
        actions.append(chosen)
        previous = x
    return torch.cat(actions), events / len(states)


def floors(cells: Path) -> str:
    """Per whole-game cell in `cells`: ratio to the int8 DQN as recorded, fc1's part alone, and re-priced
    with each stage's weight reads capped at the int8 DQN's (each weight once per decision)."""
    lines = ["| game | SNN ÷ int8 DQN | fc1 alone ÷ int8 DQN | weights read `least` ÷ int8 DQN |",
             "|---|---|---|---|"]
    for number, line in enumerate(cells.read_text().splitlines() if cells.is_file() else [], 1):
        try:
            cell = BenchmarkCell.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError, ResultsError) as exc:
            raise ResultsError(f"{cells} line {number} is not a benchmark cell ({type(exc).__name__}: {exc})") from None
        cost = cell.evaluation.snn.cost
        if cost is None:
            continue
        dqn, snn = cost.dqn_int8, cost.snn
        if snn.settings["precision"] != "int8":  # its weight bytes would not compare with the int8 DQN's
            raise ResultsError(f"{cells}: the floors need cells priced in int8 (--cost-precision int8)")
        fc1 = next(layer for layer in snn.layers if layer.name.startswith("linear"))
        capped = snn.energy_pj - sum(max(0.0, s.weight_pj - d.weight_pj) for s, d in zip(snn.layers, dqn.layers))
        lines.append(f"| {cell.evaluation.header.env_id} | {cost.ratio_int8:.3f} | {fc1.energy_pj / dqn.energy_pj:.3f} | "
                     f"{capped / dqn.energy_pj:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser, games=GAMES, threads=1)
    parser.add_argument("--states", type=int, default=4000, help="held-out consecutive states per game")
    parser.add_argument("--T", type=int, default=10, help="bits of delta coding (the whole-game table: 8 and 10)")
    parser.add_argument("--bits-layer", type=int, default=3, help="the spiking layer given fewer bits (1-based)")
    parser.add_argument("--cells", type=Path, default=Path(__file__).parent / "event_costs" / "atari_delta10" / "cells.jsonl",
                        help="whole-game delta cells (cells.jsonl of a benchmark folder) for the floors")
    args = _common.parse(parser)
    if args.states < 8 or not 1 <= args.T <= MAX_BITS or args.bits_layer < 1:
        parser.error(f"--states must be at least 8, --T 1 to {MAX_BITS} and --bits-layer at least 1, got "
                     f"{args.states}, {args.T} and {args.bits_layer}")
    try:
        print(floors(args.cells), end="\n\n")
    except ResultsError as exc:
        parser.error(str(exc))
    settings = RunSettings(n_envs=8)
    print("| game | variant | agreement with the DQN | synaptic events per decision (per stage) | "
          "event energy (µJ) | ÷ int8 DQN |\n|---|---|---|---|---|---|")
    for game in _common.games(args):
        checkpoint = _common.load_game(game, args)
        calibration, test, _, _ = calibration_and_heldout_states(checkpoint, settings, args.states)
        net = convert(checkpoint, calibration, coding="binary", T=args.T, percentile=99.99, channel_wise=True)
        states = checkpoint.prepare(torch.as_tensor(test)).to(torch.float64)
        greedy = checkpoint.q_values(torch.as_tensor(test)).argmax(1)
        snn_actions = net.act(torch.as_tensor(test))
        stages = float64_stages(net, args.T)
        fans = fan_outs(net)
        prices = [HOROWITZ_45NM.mac("int8") + HOROWITZ_45NM.sram(weighted(stage).weight.numel()) for stage in stages]
        dqn_pj = dqn_cost(checkpoint, "int8").energy_pj
        n_spiking = len(stages) - 1
        if args.bits_layer > n_spiking:
            parser.error(f"--bits-layer {args.bits_layer}: {game}'s network has {n_spiking} spiking layers")
        exact, *others = variants(args.T, n_spiking, args.bits_layer - 1)
        for variant in [exact, *others]:
            actions, events = simulate(stages, net.initial_membrane, states, settings.n_envs, variant, fans)
            if variant is exact:
                same = float((actions == snn_actions).double().mean())
                if same < 0.99:
                    raise SystemExit(f"{game}: the simulated delta coding takes the SNN's action on {same:.1%} only")
            energy = float(sum(e * p for e, p in zip(events.tolist(), prices)))
            agreement = float((actions == greedy).double().mean())
            counts = " / ".join(f"{e:,.0f}" for e in events.tolist())
            print(f"| {game} | {variant.name} | {agreement:.2%} | {counts} | {energy / 1e6:.2f} | "
                  f"{energy / dqn_pj:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
