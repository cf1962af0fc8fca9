"""Residual carry (CRPI) against fresh starts: rate-coded agreement with the DQN on consecutive states.

Each game's DQN plays `--episodes` games of at most `--steps` steps (epsilon = 0.05, one env per game,
env seeds 2 * TEST_SEED_OFFSET + i, so no episode is shared with the calibration states). Its SNN
(rate coding, p = `--percentile` on `--calibration` states of the DQN's own play, env seeds 0..7) then
decides on those states in order, one decision per state, all games side by side as one batch, under
each start rule:

- zero / half: every decision starts afresh at 0 / half the threshold (the paper / our default fix);
- raw carry: the paper's network keeping its final membranes as the next decision's start;
- crpi a,c: `network.ResidualCarry(a, c)`: half threshold + clip(a x residual, -c, c) (Xu et al.,
  ICML 2026), for each `--carry` setting.

Agreement = share of states on which the SNN's greedy action (N + V and spike-count readouts) equals
the DQN's; states after a game's end are left out. Fresh starts are simulated once at max(T) (the
first T steps of a longer run are the T-step run); a carrying SNN runs each T on its own, since the
start it hands on depends on T.

    OMP_NUM_THREADS=1 python benchmarks/residual_carry.py --fixtures DIR --out runs/residual_carry.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # benchmarks/ is on sys.path when this script runs
import numpy as np
import torch

from dqn2snn_plugin import load_dqn
from dqn2snn_plugin.calibration import TEST_SEED_OFFSET, collect_observations
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.envs.play import play
from dqn2snn_plugin.io.results import markdown_table, write_json
from dqn2snn_plugin.network import ResidualCarry
from dqn2snn_plugin.normalization import layer_scales

MINATAR = Path(__file__).resolve().parent.parent / "dqn2snn_plugin" / "data" / "minatar"
READOUTS = {"spikes+membrane": "N+V", "spikes": "spikes"}


def sequences(ckpt: DQNCheckpoint, episodes: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The states of `episodes` DQN games in order, [steps, episodes, ...] (a game that ended early
    repeats its last state), and which of them were visited, [steps, episodes]."""
    games = []
    for i in range(episodes):
        states: list[np.ndarray] = []
        play(ckpt.act, ckpt.env_id, 1, n_envs=1, seed=2 * TEST_SEED_OFFSET + i, max_steps=steps,
             on_step=lambda obs, greedy, taken: states.append(obs[0].copy()),
             observation_shape=tuple(ckpt.observation_shape))
        games.append(np.stack(states))
    visited = np.zeros((steps, episodes), dtype=bool)
    padded = np.empty((steps, episodes, *games[0].shape[1:]), dtype=games[0].dtype)
    for i, game in enumerate(games):
        visited[: len(game), i] = True
        padded[:, i] = game[np.minimum(np.arange(steps), len(game) - 1)]
    return padded, visited


def agreement(actions: dict[str, torch.Tensor], dqn: torch.Tensor, visited: np.ndarray) -> dict[str, float]:
    """Share of visited states on which each readout's action equals the DQN's."""
    mask = torch.as_tensor(visited.reshape(-1))
    return {name: float((actions[name].reshape(-1) == dqn.reshape(-1))[mask].float().mean()) for name in READOUTS}


def measure(ckpt: DQNCheckpoint, args: argparse.Namespace) -> dict:
    """Agreement per start rule, T and readout on one game's consecutive states."""
    calibration = collect_observations(ckpt, args.calibration, seed=0)
    scales = layer_scales(ckpt.q_network, ckpt.prepare(calibration), args.percentile)
    states, visited = sequences(ckpt, args.episodes, args.steps)
    flat = states.reshape(-1, *states.shape[2:])
    dqn = ckpt.act(flat).cpu().reshape(visited.shape)
    result = {"states": int(visited.sum()), "games": args.episodes, "agreement": {}}
    for name, initial in (("zero", "zero"), ("half", "half")):
        snn = convert(ckpt, None, scales=scales, initial_membrane=initial)
        values = {T: {r: [] for r in READOUTS} for T in args.T}
        for start in range(0, len(flat), 256):
            for T, readouts in snn.readouts_at(flat[start : start + 256], args.T).items():
                for r in READOUTS:
                    values[T][r].append(readouts[r].argmax(1))
        result["agreement"][name] = {T: agreement({r: torch.cat(v) for r, v in per.items()}, dqn, visited)
                                     for T, per in values.items()}
    carries = [("raw carry", None)] + [(f"crpi {c.scale:g},{c.clip:g}", c) for c in args.carry]
    for name, carry in carries:
        snn = convert(ckpt, None, scales=scales, residual_carry=carry)
        snn.carry_state = True  # raw carry: the paper's network (zero start) keeping its membranes
        result["agreement"][name] = {}
        for T in args.T:
            snn.reset_state()
            actions = {r: [] for r in READOUTS}
            for step in states:  # one decision per state, every game at once
                readouts = snn.readouts(step, T)
                for r in READOUTS:
                    actions[r].append(readouts[r].argmax(1))
            result["agreement"][name][T] = agreement({r: torch.stack(v) for r, v in actions.items()}, dqn, visited)
    return result


def tables(results: dict, Ts: list[int]) -> str:
    """One markdown table per T: games x start rules, cells "N+V / spikes" agreement in %."""
    rules = list(next(iter(results.values()))["agreement"])
    out = []
    for T in Ts:
        rows = []
        for game, result in results.items():
            rows.append([game, result["states"], *(" / ".join(f"{100 * result['agreement'][rule][T][r]:.1f}"
                                                              for r in READOUTS) for rule in rules)])
        means = [" / ".join(f"{100 * np.mean([res['agreement'][rule][T][r] for res in results.values()]):.1f}"
                            for r in READOUTS) for rule in rules]
        rows.append(["mean", sum(res["states"] for res in results.values()), *means])
        out.append(f"T = {T} (agreement %, N+V / spikes readout)\n\n" + markdown_table(["game", "states", *rules], rows))
    return "\n\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser, threads=1)
    parser.add_argument("--minatar", default="Breakout,SpaceInvaders,Asterix,Seaquest,Freeway",
                        help="shipped MinAtar agents to run too (comma-separated; empty: none)")
    parser.add_argument("--calibration", type=int, default=1000, help="calibration states (DQN play, env seeds 0..7)")
    parser.add_argument("--episodes", type=int, default=6, help="games whose consecutive states are measured")
    parser.add_argument("--steps", type=int, default=150, help="states per game at most (its first ones)")
    parser.add_argument("--T", type=lambda text: sorted({int(t) for t in text.split(",")}), default=[16, 32, 64])
    parser.add_argument("--percentile", type=float, default=99.9)
    parser.add_argument("--carry", type=lambda text: [ResidualCarry.parse(c) for c in text.split(";")],
                        default=[ResidualCarry(0.25), ResidualCarry(0.5), ResidualCarry(1.0)],
                        help="residual carries SCALE,CLIP separated by ';' (default 0.25,0.5;0.5,0.5;1,0.5)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = _common.parse(parser)
    games = {game: lambda game=game: _common.load_game(game, args) for game in _common.games(args)}
    games |= {f"MinAtar {game}": lambda game=game: load_dqn(MINATAR / f"dqn-MinAtar-{game}-v1.zip")
              for game in args.minatar.split(",") if game.strip()}
    results = {}
    for game, load in games.items():
        start = time.perf_counter()
        results[game] = measure(load(), args)
        results[game]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"{game}: {results[game]['states']} states, {results[game]['seconds']} s", flush=True)
        if args.out is not None:  # after every game: an interrupted run keeps what it measured
            settings = {**vars(args), "fixtures": str(args.fixtures), "out": str(args.out),
                        "carry": [str(c) for c in args.carry]}
            write_json(args.out, {"settings": settings, "results": results})
    print(tables(results, args.T))


if __name__ == "__main__":
    main()
