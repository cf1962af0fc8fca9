"""Issue 6's table: agreement, SNN score and cost at a few time steps, the paper's method against each option.

For every fixture game: calibration states (fitting) and held-out test states come from separate
episodes of the DQN's own play; every option is fitted on the calibration states only, and the
agreement is always with the original DQN's greedy action.

Options (each at every T of --T):
- paper: p = 99.9 ("nonzero" rank), membranes start at 0, state reset before each decision;
- half: the same with membranes starting at threshold / 2;
- carry: the paper's network keeping its membranes from one frame to the next while it plays
  (agreement measured on the states it visits only: held-out states are not consecutive frames);
- bias: half + `calibrate_biases` (per-channel rate matching, then per-action output offsets);
- tuned: `tune` (p, initial membrane and bias calibration chosen on held-out calibration states);
- distilled: `distill` (QCFS copy fine-tuned, then fine-tuned as the SNN at T) converted with
  half-threshold membranes; distilled-cw: the same with one threshold per channel;
- binary: binary spike coding (`convert(..., coding="binary")`: T-bit codes, T steps per layer), one
  scale per channel at p = 99.99, no training; binary-distilled: `distill(..., coding="binary")` (a
  copy with 2**T - 1 levels, no SNN phase) sent as T-bit codes.
Reference: the paper's method at T = --reference-T (500; 0 skips it) on the same states.

Every finished cell is appended to OUT/<game>/cells.jsonl at once (a rerun resumes); the table is
OUT/few_steps.{md,csv}.

    python benchmarks/few_steps.py --out runs/few_steps                    # CPU: about 15 min a game
    python benchmarks/few_steps.py --device cuda --games Pong --out runs/few_steps
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import _common  # benchmarks/ is on sys.path when this script runs
from dqn2snn_plugin import convert, tune
from dqn2snn_plugin.calibration import calibration_and_test_observations
from dqn2snn_plugin.improve.distillation import distill
from dqn2snn_plugin.experiments.evaluation import play_dqn, play_snn
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.normalization import layer_scales
from dqn2snn_plugin.io.results import CellLog, write_table
from dqn2snn_plugin.improve.tuning import calibrate_biases

OPTIONS = ("paper", "half", "carry", "bias", "tuned", "distilled", "distilled-cw", "binary", "binary-distilled")


def test_agreement(checkpoint, snn, states: np.ndarray, actions: torch.Tensor, T: int) -> dict:
    """Agreement with the DQN on held-out states (N + V readout) and the mean cost per decision."""
    chosen, spikes, sops = [], 0.0, 0.0
    for start in range(0, len(states), 250):
        chosen.append(snn.readouts(states[start : start + 250], T)["spikes+membrane"].argmax(1).cpu())
        spikes += float(sum(s.float().sum() for s in snn.last_stats.spikes))
        sops += float(snn.last_stats.synaptic_ops.float().sum())
    rate = float((torch.cat(chosen) == actions.cpu()).float().mean())
    return {"agreement_test": rate, "test_spikes_per_decision": spikes / len(states),
            "test_synaptic_ops_per_decision": sops / len(states)}


def build(option: str, checkpoint, calibration, scales, T: int, args) -> tuple[object, dict]:
    """The SNN of one option at T, plus what fitting it chose or logged."""
    if option in ("paper", "carry"):
        snn = convert(checkpoint, None, scales=scales, initial_membrane="zero", T=T)
        snn.carry_state = option == "carry"
        return snn, {}
    if option == "half":
        return convert(checkpoint, None, scales=scales, initial_membrane="half", T=T), {}
    if option == "bias":
        snn = convert(checkpoint, None, scales=scales, initial_membrane="half", T=T)
        return calibrate_biases(snn, checkpoint, calibration[: args.fit], T), {}
    if option == "tuned":
        snn = tune(checkpoint, calibration[: args.fit], T, percentiles=(99.9, 99.99))
        return snn, {"chosen": asdict(snn.tuning_report[0])}
    if option in ("distilled", "distilled-cw", "binary-distilled"):
        result = distill(checkpoint, calibration, T, epochs=args.epochs, snn_epochs=args.snn_epochs,
                         batch_size=args.batch_size, margin=args.margin, channel_wise=option != "distilled",
                         coding="binary" if option == "binary-distilled" else "rate")
        snn = result.to_snn()
        return snn, {"history": result.history}
    if option == "binary":
        return convert(checkpoint, calibration, percentile=99.99, channel_wise=True, coding="binary", T=T), {}
    raise ValueError(option)


def run_game(game: str, args, settings: RunSettings) -> list[dict]:
    checkpoint = _common.load_game(game, args, device=args.device)
    log = CellLog(args.out / game, {"game": game, "calibration": args.calibration, "test": args.test,
                                    "fit": args.fit, "epochs": args.epochs, "snn_epochs": args.snn_epochs,
                                    "batch_size": args.batch_size, "margin": args.margin,
                                    "settings": settings.as_config()})
    calibration, test = calibration_and_test_observations(checkpoint, args.calibration, args.test)
    actions = checkpoint.act(test)
    scales = layer_scales(checkpoint.q_network, checkpoint.prepare(calibration), 99.9)
    if args.episodes and log.find("dqn") is None:
        log.append({"kind": "dqn", "score": play_dqn(checkpoint, settings)[0].to_json()})
    cells = [("paper", args.reference_T)] * bool(args.reference_T) + [(o, T) for T in args.T for o in args.options]
    for option, T in cells:
        if log.find("cell", option=option, T=T) is not None:
            continue
        start = time.perf_counter()
        snn, fitted = build(option, checkpoint, calibration, scales, T, args)
        fit_s = time.perf_counter() - start
        record = {"kind": "cell", "option": option, "T": T, "device": args.device, "fit_seconds": fit_s, **fitted}
        if option != "carry":
            record.update(test_agreement(checkpoint, snn, test, actions, T))
        if args.episodes:
            snn.reset_state()
            record.update(play_snn(checkpoint, snn, T, settings).to_json())
        log.append(record)
        print(f"{game} {option} T={T}: test {record.get('agreement_test')}, score "
              f"{record.get('score', {}).get('mean')} ({time.perf_counter() - start:.0f}s)", flush=True)
    return log.records


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def rows_of(game: str, records: list[dict]) -> list[list[object]]:
    dqn = next((r["score"] for r in records if r["kind"] == "dqn"), None)
    rows = []
    for r in (r for r in records if r["kind"] == "cell"):
        score = r.get("score")
        rows.append([
            game, r["option"], r["T"], pct(r.get("agreement_test")),
            pct(r.get("agreement_snn_visited", {}).get("spikes+membrane", {}).get("rate")),
            "-" if score is None else f"{score['mean']:.1f} ± {score['std']:.1f}",
            "-" if dqn is None else f"{dqn['mean']:.1f} ± {dqn['std']:.1f}",
            f"{r.get('synaptic_ops_per_decision', r.get('test_synaptic_ops_per_decision', 0)):,.0f}",
            f"{r.get('spikes_per_decision', r.get('test_spikes_per_decision', 0)):,.0f}", r.get("device", "-"),
        ])
    return rows


HEADERS = ["game", "option", "T", "agreement test %", "agreement SNN-visited %", "SNN score", "DQN score",
           "synaptic ops / decision", "spikes / decision", "device"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser)
    parser.add_argument("--T", default="16,8,32,4", help="time steps per decision (cells run in this order)")
    parser.add_argument("--options", default=",".join(OPTIONS), help=f"any of {','.join(OPTIONS)}")
    parser.add_argument("--reference-T", type=int, default=500, help="T of the paper-method reference cell (0: none)")
    parser.add_argument("--calibration", type=int, default=15000, help="calibration states (scales, distillation)")
    parser.add_argument("--fit", type=int, default=1000, help="calibration states for bias calibration and tune")
    parser.add_argument("--test", type=int, default=1000, help="held-out test states")
    parser.add_argument("--epochs", type=int, default=6, help="distillation: quantisation-aware epochs")
    parser.add_argument("--snn-epochs", type=int, default=4, help="distillation: epochs through the simulated SNN")
    parser.add_argument("--batch-size", type=int, default=32, help="distillation: states per optimiser step")
    parser.add_argument("--margin", type=float, default=3.0, help="distillation: weight of the greedy-action hinge")
    parser.add_argument("--episodes", type=int, default=8, help="games per SNN cell (0: agreement only)")
    parser.add_argument("--max-steps", type=int, default=1000, help="agent steps per game (cap)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("runs/few_steps"), help="output folder")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from OUT/<game>/cells.jsonl")
    args = _common.parse(parser)
    args.T = [int(t) for t in args.T.split(",")]
    args.options = [o for o in args.options.split(",") if o]
    unknown = set(args.options) - set(OPTIONS)
    if unknown:
        parser.error(f"unknown options {sorted(unknown)}: choose from {','.join(OPTIONS)}")
    settings = RunSettings(episodes=max(args.episodes, 1), max_steps=args.max_steps, n_envs=8).check()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for game in _common.games(args):
        if args.table_only:
            cells = args.out / game / "cells.jsonl"
            records = [json.loads(line) for line in cells.read_text().splitlines()] if cells.exists() else []
        else:
            records = run_game(game, args, settings)
        rows += rows_of(game, records)
        write_table(args.out, "few_steps", HEADERS, rows)


if __name__ == "__main__":
    main()
