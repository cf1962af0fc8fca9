"""The `dqn2snn` command line: one subcommand per task, each a `_register_<name>` + `_cmd_<name>` pair.

To add a subcommand, write `_register_<name>(subparsers)` (which sets `handler=_cmd_<name>`) and
`_cmd_<name>(args) -> int`, and list the register function in `SUBCOMMANDS`. A `Dqn2SnnError`
raised by any handler, and any usage error, is printed as one line `dqn2snn: error: <message>` and
exits with status 2; Ctrl-C prints one line and exits with 130; a stdout that cannot be written (a
closed pipe: quietly, as SIGPIPE would; /dev/full: one line) ends the command too. Handlers check every
option, the output path and the cache folder, load the checkpoint and check that its state sets fit
in memory (`_load_for`, their one prologue), and only then work; output folders are written as a
whole at the end (`results.write_folder`), so a refused or failed run leaves nothing behind.

Options are declared once: what decides a result is a field of `experiments.settings.RunSettings`,
whose help, parser and default make its flag (`settings.add_options`); the options the commands
share otherwise (`--T`, `--percentile`, `-o`, ...) have one `_add_*` function each.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from dqn2snn_plugin.errors import ConfigError, Dqn2SnnError, ResultsError
from dqn2snn_plugin.experiments import settings
from dqn2snn_plugin.io.cache import check_cache_dir
from dqn2snn_plugin.io.results import check_output_dir, check_output_file, markdown_table, write_folder, write_json

if TYPE_CHECKING:  # loaded by the handlers only: building the parser loads no torch
    from dqn2snn_plugin.checkpoint import DQNCheckpoint


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (`dqn2snn: error: ...`, exit 2), like the plugin's own errors."""

    def error(self, message: str) -> None:
        self.exit(2, f"dqn2snn: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        """Write and flush, so that --help into a closed pipe or a full disk fails like any output
        (argparse's own method ignores such failures)."""
        if message:
            file = file or sys.stderr
            file.write(message)
            file.flush()


# ---------------------------------------------------------------- options shared by the commands, declared once

_type = settings.argparse_type
CHECKPOINT_HELP = "SB3 .zip, QNetwork .pt state dict, or hf://<org>/<repo>"
# default T values per command and coding (binary coding's T is bits per code). They are the codings'
# own `default_T`, `sweep_Ts` and `search_Ts` (and the paper's T = 500 for a rate benchmark), written
# out so that building the parser loads no torch; tests/test_cli.py holds the two equal.
DEFAULT_T = {"evaluate": {"rate": [64], "binary": [8], "delta": [8]}, "convert": {"rate": [64], "binary": [8], "delta": [8]},
             "sweep": {"rate": [8, 16, 32, 64, 128, 256, 500], "binary": [2, 4, 6, 8, 10, 12, 16],
                       "delta": [2, 4, 6, 8, 10, 12, 16]},
             "tune": {"rate": [4, 8, 16, 32, 64, 128], "binary": [2, 4, 6, 8, 10, 12, 16], "delta": [2, 4, 6, 8, 10, 12, 16]},
             "benchmark": {"rate": [500], "binary": [8], "delta": [8]}}


def _add_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help=CHECKPOINT_HELP)


def _add_T(parser: argparse.ArgumentParser, command: str, what: str, *, many: bool) -> None:
    """--T: one value or a comma-separated list, its defaults from DEFAULT_T."""
    rate, binary = (",".join(map(str, DEFAULT_T[command][coding])) for coding in ("rate", "binary"))
    parser.add_argument("--T", type=_type(settings.counts if many else settings.count), default=None,
                        help=f"{what} (default {rate}; with --coding binary or delta: bits per level, default {binary})")


def _Ts(args: argparse.Namespace, coding: str) -> list[int]:
    """--T as a list, or the command's default for the coding."""
    if args.T is not None:
        return args.T if isinstance(args.T, list) else [args.T]
    return DEFAULT_T[args.command][coding]


def _add_percentile(parser: argparse.ArgumentParser, *, many: bool, default: str | None = "99.9") -> None:
    if many:
        parser.add_argument("--percentile", type=_type(settings.words), default=default and default.split(","),
                            help=f"comma-separated percentiles in (0, 100] or max (default {default or '99.9'})")
    else:
        parser.add_argument("--percentile", default=default,
                            help=f"normalisation percentile in (0, 100] or max (default {default})")


def _add_test_frames(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    parser.add_argument("--test-frames", type=_type(settings.count), default=default,
                        help=f"held-out DQN-visited states for {what}, from episodes separate from the games and "
                        f"the calibration (default {default})")


def _add_device(parser: argparse.ArgumentParser, where: str = "") -> None:
    parser.add_argument("--device", default="cpu", choices=settings.DEVICES,
                        help=f"where the networks run (cuda only when a GPU exists{where}; default cpu)")


def _add_game_options(parser: argparse.ArgumentParser) -> None:
    _add_device(parser)


def _add_output(parser: argparse.ArgumentParser, help: str, *, required: bool = True, default: str | None = None,
                file: bool = False) -> None:
    """-o/--output: a folder (checked, not created, by `_load_for`), or with `file` a file path."""
    parser.add_argument("-o", "--output", required=required, default=default, help=help)
    parser.set_defaults(output_is_file=file)


def _load_for(args: argparse.Namespace, source: str | Path | None = None) -> tuple[settings.RunSettings,
                                                                                  DQNCheckpoint]:
    """The handlers' prologue, after each command's own checks: the settings, the device, the output
    path and the cache folder (checked; nothing is created yet), then the checkpoint (`source`, default
    the positional one) loaded with its game checks, then whether its state sets fit in memory.
    Returns (RunSettings, DQNCheckpoint)."""
    from dqn2snn_plugin.experiments.evaluation import check_memory, load_checked, resolve_device

    run_settings = settings.from_args(args)
    device = resolve_device(args.device)
    if not args.output_is_file:
        check_output_dir(args.output)
    elif args.output is not None:
        check_output_file(args.output)
    check_cache_dir()
    checkpoint = load_checked(source or args.checkpoint, env_id=run_settings.env_id, device=device,
                              input_scale=run_settings.input_scale, protocol=run_settings.protocol)
    check_memory(checkpoint, run_settings, getattr(args, "test_frames", 0))
    return run_settings, checkpoint


# ---------------------------------------------------------------- the commands


def _register_inspect(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise a DQN checkpoint (algorithm, shapes, layers)",
        description="Load a DQN checkpoint safely and print what it holds: algorithm, policy, SB3 version, "
        "observation shape, number of actions, layers with their shapes, parameter count.",
    )
    _add_checkpoint(parser)
    settings.add_options(parser, omit=settings.fields_except("env_id", "protocol", "input_scale"))
    parser.set_defaults(handler=_cmd_inspect)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from dqn2snn_plugin.checkpoint import describe, load_dqn
    from dqn2snn_plugin.envs.play import action_count, check_action_count, check_observation_shape
    from dqn2snn_plugin.errors import EnvIdError

    checkpoint = load_dqn(args.checkpoint, env_id=args.env_id, input_scale=args.input_scale)
    if args.env_id:
        try:
            action_count(args.env_id, args.protocol)
        except EnvIdError:
            pass  # an id no env library registers (a custom env): nothing to compare with, only shown
        else:
            check_action_count(args.env_id, checkpoint.n_actions, args.protocol)
            check_observation_shape(args.env_id, checkpoint.observation_shape, args.protocol)
    print(describe(checkpoint))
    return 0


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score and agreement of the DQN and its SNN at one (T, percentile)",
        description="Convert CKPT at one percentile, play whole games with the DQN and with the SNN "
        "(epsilon = 0.05), and report scores (mean ± std), agreement of greedy actions on the states each "
        "one visits (spikes and spikes+membrane readouts), spikes per decision, and the SNN's energy per decision "
        "per layer over the states it visits, against the int8 and fp32 DQN's (docs/costs.md). The calibration "
        "states come from episodes separate from the measured games.",
    )
    _add_checkpoint(parser)
    _add_T(parser, "evaluate", "time steps per decision", many=False)
    _add_percentile(parser, many=False)
    settings.add_options(parser)
    _add_game_options(parser)
    _add_output(parser, "write the full result as JSON to this file", required=False, file=True)
    parser.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dqn2snn_plugin.experiments.evaluation import check_grid, evaluate
    from dqn2snn_plugin.experiments.report import format_evaluation

    (T,), (p,) = check_grid(_Ts(args, args.coding), [args.percentile], args.coding)
    run_settings, checkpoint = _load_for(args)
    result = evaluate(checkpoint, T=T, percentile=p, settings=run_settings)
    print(format_evaluation(result))
    if args.output is not None:
        try:
            write_json(args.output, result.to_json())
        except ResultsError as exc:  # a full disk after the whole run: the result is not lost
            print(json.dumps(result.to_json(), indent=2))
            raise ResultsError(f"{exc}; the result is printed above as JSON") from None
        print(f"result written to {args.output}")
    return 0


def _register_sweep(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="score and agreement over a grid of T and percentiles, resumable",
        description="Measure every (percentile, T) cell; each finished cell is appended to DIR/cells.jsonl at "
        "once, so a rerun resumes where an interrupted one stopped. DIR/config.json pins the settings: a rerun "
        "with other settings is refused. Writes DIR/sweep.csv, DIR/sweep.md, DIR/score_vs_T.png and "
        "DIR/agreement_vs_T.png.",
    )
    _add_checkpoint(parser)
    _add_T(parser, "sweep", "comma-separated time steps per decision", many=True)
    _add_percentile(parser, many=True, default="99,99.9,99.99,max")
    _add_test_frames(parser, 1000, "the agreement-vs-T curve")
    settings.add_options(parser, omit=("residual_carry",))  # held-out states are not consecutive
    _add_game_options(parser)
    _add_output(parser, "results directory (created; reused to resume)")
    parser.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from dqn2snn_plugin.experiments.evaluation import check_grid
    from dqn2snn_plugin.experiments.report import SWEEP_HEADERS
    from dqn2snn_plugin.experiments.sweep import sweep

    Ts, ps = check_grid(_Ts(args, args.coding), args.percentile, args.coding)
    run_settings, checkpoint = _load_for(args)
    rows = sweep(checkpoint, Ts, ps, run_settings, args.output, test_frames=args.test_frames)
    print(markdown_table(SWEEP_HEADERS, rows))
    print(f"results in {args.output}/ (sweep.csv, sweep.md, score_vs_T.png, agreement_vs_T.png)")
    return 0


def _register_benchmark(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="the paper's table over many games x settings, resumable, optionally on Ray",
        description="Evaluate every checkpoint (or every .zip/.pt/.pth in a directory; hf:// ids too) at every "
        "setting of the grid --coding x --T x --percentile: one cell per game and setting "
        "(dqn2snn_plugin.experiments.grid). Each game is read from its checkpoint's file name "
        "(<Game>NoFrameskip-v4.zip). Checkpoints holding the same weights are one game. Each finished cell is "
        "appended to DIR/cells.jsonl at once, so a rerun computes only the missing cells; DIR/config.json pins "
        "what all cells share. Writes the table (with each SNN's energy per decision against the int8 DQN's) as "
        "DIR/benchmark.md and DIR/benchmark.csv. With --ray the cells "
        "run as Ray tasks (docs/ray.md).",
    )
    parser.add_argument("checkpoints", nargs="*", help="checkpoints, directories of checkpoints or hf:// ids")
    parser.add_argument("--T", type=_type(settings.counts), default=None,
                        help="comma-separated time steps per decision; bits per layer for binary coding, whose "
                        "cells above 24 are skipped (default 500, the paper's; 8 with --coding binary alone)")
    _add_percentile(parser, many=True, default=None)
    parser.add_argument("--coding", type=_type(settings.words), default=None, dest="codings",
                        help="comma-separated codings: rate (the paper's) and/or binary (T-bit codes) (default rate)")
    parser.add_argument("--paper", action="store_true",
                        help="the paper's protocol and games: its 17 Atari games (those without a checkpoint are "
                        "listed with their hf:// id), 30 whole games per player, 18,000-step cap (--episodes and "
                        "--max-steps override them for a trial), rate coding T=500 p=99.9, plus our best setting "
                        "(binary T=8 p=99.99 per channel); not combinable with --T/--percentile/--coding/"
                        "--channel-wise")
    settings.add_options(parser, omit=("coding",))
    parser.set_defaults(episodes=None)  # the settings' default, or the paper's 30 with --paper
    _add_device(parser, "; with --ray on the workers")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run the cells as Ray tasks: bare --ray starts a Ray on this machine, --ray auto joins "
                        "the cluster `ray start` began here, --ray HOST:PORT joins that head node (docs/ray.md)")
    parser.add_argument("--cpus-per-cell", type=_type(settings.finite_number), default=None,
                        help="with --ray: CPUs reserved per cell, also its torch threads (default 1)")
    parser.add_argument("--gpus-per-cell", type=_type(settings.finite_number), default=None,
                        help="with --ray: GPUs reserved per cell, fractions share one; needs --device cuda (default 0)")
    _add_output(parser, "results directory (created; reused to resume)")
    parser.set_defaults(handler=_cmd_benchmark)


def _benchmark_grid(args: argparse.Namespace):
    """The grid's settings and notes on skipped cells, from the grid options or --paper."""
    from dqn2snn_plugin.experiments import grid

    if not args.paper:
        codings = args.codings or ["rate"]
        return grid.grid_settings(_Ts(args, codings[0] if len(codings) == 1 else "rate"),
                                  args.percentile or ["99.9"], codings, args.channel_wise)
    if args.T or args.percentile or args.codings or args.channel_wise:
        raise ConfigError("--paper fixes the settings (rate T=500 p=99.9 and binary T=8 p=99.99 per channel): "
                          "drop --T/--percentile/--coding/--channel-wise, or drop --paper")
    return [grid.PAPER_SETTING, grid.BEST_SETTING], []


def _ray_runner(args: argparse.Namespace):
    """The Ray runner the options ask for, checked; None without --ray."""
    if args.ray is None:
        if args.cpus_per_cell is not None or args.gpus_per_cell is not None:
            raise ConfigError("--cpus-per-cell and --gpus-per-cell reserve Ray resources: add --ray")
        return None
    from dqn2snn_plugin.adapters.ray import RayRunner

    return RayRunner(cpus_per_cell=1.0 if args.cpus_per_cell is None else args.cpus_per_cell,
                     gpus_per_cell=args.gpus_per_cell or 0.0, device=args.device).check()


def _paper_games(games: list, notes: list[str]) -> list:
    """The paper's games among `games`; notes (printed first) name the others and the paper's games not given."""
    from dqn2snn_plugin.experiments import grid

    ours, missing, others = grid.split_paper_games(games)
    notes += [f"not in the paper's list, skipped: {g.sources[0]}" for g in others]
    if missing:
        notes.append(f"{len(missing)} of the paper's games have no checkpoint here; add them with: "
                     + " ".join(grid.hub_id(name) for name in missing))
    if not ours:
        print("\n".join(notes))
        raise ConfigError("--paper: none of the checkpoints is one of the paper's 17 games: pass the hf:// ids above")
    return ours




def _cmd_benchmark(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from dqn2snn_plugin.experiments import grid
    from dqn2snn_plugin.experiments.evaluation import check_memory, load_checked, resolve_device
    from dqn2snn_plugin.experiments.report import benchmark_table, scores_table

    if args.episodes is None:
        args.episodes = settings.PAPER_EPISODES if args.paper else settings.RunSettings.episodes
    if not args.checkpoints and not args.paper:
        raise ConfigError("name at least one checkpoint, directory or hf:// id (or use --paper)")
    cell_settings, notes = _benchmark_grid(args)
    run_settings = settings.from_args(args)
    runner = _ray_runner(args)
    if args.ray not in (None, "local", "auto"):
        from dqn2snn_plugin.adapters.ray import probe

        probe(args.ray)  # a dead address fails now, not after the checkpoints are loaded
    device = "cpu" if runner else resolve_device(args.device)  # on Ray the workers move the networks
    check_output_dir(args.output)  # created by the grid once the checkpoints are loaded
    check_cache_dir()
    checkpoints = [load_checked(s, device=device, env_id=run_settings.env_id, input_scale=run_settings.input_scale,
                                protocol=run_settings.protocol) for s in grid.checkpoint_sources(args.checkpoints)]
    for checkpoint in checkpoints:
        check_memory(checkpoint, run_settings)
    games = grid.unique_games(checkpoints)
    notes += [f"{' and '.join(g.sources)} hold the same weights: one game" for g in games if len(g.sources) > 1]
    if args.paper:
        games = _paper_games(games, notes)
    table = grid.Grid(games, cell_settings, run_settings, args.output)
    todo = table.missing()
    notes.append(f"{len(todo)} of {len(table.cells)} cells to compute ({len(table.cells) - len(todo)} already in "
                 f"{args.output})")
    for note in notes:
        print(note)
    if todo and runner is not None:
        from dqn2snn_plugin.adapters.ray import connected

        context = connected(args.ray)
    else:
        context = nullcontext(None)
    with context as cluster:
        if cluster:
            print(cluster)
        rows = table.run(runner or grid.run_here)
    print(benchmark_table(rows))
    print(scores_table(table.records()))
    print(f"results in {args.output}/ (benchmark.md/.csv, scores.md/.csv/.json, cells.jsonl)")
    return 0


# what `convert` and `tune` write into their folder: a rerun's folder holds its own files, none of an earlier run
SNN_FILES = ("snn.pt", "scales.json", "snn.nir", "tuning.json")


def _register_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a DQN and save the SNN (reload with dqn2snn_plugin.io.store.load_snn)",
        description="Calibrate on the DQN's own play, convert, and save OUT/snn.pt (load it with "
        "dqn2snn_plugin.io.store.load_snn), OUT/scales.json and, for rate coding, OUT/snn.nir (the NIR graph: "
        "dqn2snn_plugin.from_nir, or dqn2snn_plugin.adapters.nir.load_nir for SpikingJelly, snnTorch, Sinabs).",
    )
    _add_checkpoint(parser)
    _add_T(parser, "convert", "default time steps per decision of the saved SNN", many=False)
    _add_percentile(parser, many=False)
    settings.add_options(parser, omit=("episodes", "max_steps", *settings.COST_FIELDS))
    _add_game_options(parser)
    _add_output(parser, "output directory (created)")
    parser.set_defaults(handler=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from dqn2snn_plugin.conversion import convert
    from dqn2snn_plugin.experiments.evaluation import calibration_states, check_grid
    from dqn2snn_plugin.experiments.records import weights_digest
    from dqn2snn_plugin.io.store import save_snn
    from dqn2snn_plugin.normalization import scale_shares

    (T,), (p,) = check_grid(_Ts(args, args.coding), [args.percentile], args.coding)
    run_settings, checkpoint = _load_for(args)
    states, draw = calibration_states(checkpoint, run_settings)
    snn = convert(checkpoint, states, percentile=p, channel_wise=run_settings.channel_wise,
                  backend=run_settings.backend, readout=run_settings.readout, T=T, coding=run_settings.coding,
                  residual_carry=run_settings.residual_carry)

    def write(folder: Path) -> None:
        save_snn(snn, checkpoint, folder / "snn.pt")
        write_json(folder / "scales.json", snn.scales.as_dict())
        if snn.coding.nir_exportable:
            from dqn2snn_plugin.io.nir_graph import save_nir

            save_nir(snn, folder / "snn.nir", provenance={
                "checkpoint": checkpoint.source, "checkpoint_sha": weights_digest(checkpoint),
                "env_id": checkpoint.env_id, "algorithm": checkpoint.algorithm,
                "calibration_frames": run_settings.calibration_frames, "seed": run_settings.seed,
                "calibration_states": draw.to_json()})

    out = write_folder(args.output, write, replaces=SNN_FILES)
    print(f"saved {out / 'snn.pt'} and {out / 'scales.json'}")
    if not snn.coding.nir_exportable:
        print(f"no snn.nir: {snn.coding.name} coding has no NIR form ({snn.coding.why_not_nir})")
    else:
        print(f"saved {out / 'snn.nir'} (NIR graph; run it elsewhere with dqn2snn_plugin.adapters.nir.load_nir)")
    shares = scale_shares(checkpoint.q_network, checkpoint.prepare(states), snn.scales)
    print(f"states above each spiking layer's scale (the states that set it; {snn.scales.state_trim:g}% of the most "
          f"extreme left out): " + ", ".join(f"layer {i + 1} {share:.1%}" for i, share in enumerate(shares)))
    return 0


def _register_tune(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help="find the cheapest T whose tuned SNN reaches a target agreement, and save it",
        description="For T = 4, 8, 16, ... try percentiles, initial membranes and bias calibration "
        "(dqn2snn_plugin.improve.tuning; with --distill also a distilled copy), choose on held-out calibration "
        "states, stop at the first T whose agreement with the DQN reaches the target, and save OUT/snn.pt and "
        "OUT/tuning.json.",
    )
    _add_checkpoint(parser)
    parser.add_argument("--target-agreement", type=_type(settings.finite_number), default=0.99,
                        help="agreement with the DQN's greedy action to reach, in (0, 1] (default 0.99)")
    _add_T(parser, "tune", "comma-separated time steps to try, cheapest first", many=True)
    parser.add_argument("--distill", action="store_true",
                        help="also try a copy distilled for each T (dqn2snn_plugin.improve.distillation; "
                        "minutes per T on a CPU, seconds on a GPU)")
    settings.add_options(parser, omit=("episodes", "max_steps", "readout", "residual_carry", *settings.COST_FIELDS))
    _add_game_options(parser)
    _add_output(parser, "output directory (created)")
    parser.set_defaults(handler=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dqn2snn_plugin.experiments.evaluation import calibration_states, check_grid
    from dqn2snn_plugin.improve.tuning import cheapest_T
    from dqn2snn_plugin.io.store import save_snn

    Ts, _ = check_grid(_Ts(args, args.coding), ["max"], args.coding)
    if not 0.0 < args.target_agreement <= 1.0:
        raise ConfigError(f"--target-agreement must be in (0, 1], got {args.target_agreement}")
    run_settings, checkpoint = _load_for(args)
    states, draw = calibration_states(checkpoint, run_settings)
    snn = cheapest_T(checkpoint, states, args.target_agreement, Ts, backend=run_settings.backend,
                     distillation=args.distill, coding=run_settings.coding, channel_wise=run_settings.channel_wise)
    report = {"T": snn.T, "reached_target": snn.reached_target, "target": args.target_agreement,
              "validation_agreement": snn.validation_agreement,
              "options": [asdict(r) for r in snn.tuning_report], "calibration_states": draw.to_json()}

    def write(folder: Path) -> None:
        save_snn(snn, checkpoint, folder / "snn.pt")
        write_json(folder / "tuning.json", report)

    out = write_folder(args.output, write, replaces=SNN_FILES)
    verdict = "reaches" if snn.reached_target else "does not reach (best found)"
    print(f"T={snn.T}: validation agreement {snn.validation_agreement:.1%} {verdict} the target "
          f"{args.target_agreement:.1%}; best option {asdict(snn.tuning_report[0])}")
    print(f"saved {out / 'snn.pt'} and {out / 'tuning.json'}")
    return 0


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the paper's conversion vs our binary coding on the shipped Breakout DQN and a competent "
        "MinAtar DQN, in tables and plots",
        description="Convert the shipped Breakout fixture DQN (or --checkpoint) twice, with the paper's method "
        "(rate coding, N+V readout, p = 99.9) and with our training-free binary coding (T-bit codes, p = 99.99, "
        "per-channel scales); measure held-out agreement, agreement and score while playing short games, "
        "synaptic operations, energy per decision next to the int8 and fp32 DQN's, and latency; print one table and write result.json, demo.md and "
        "agreement_vs_latency.png to the output directory. Then the same for the competent MinAtar Breakout DQN "
        "shipped with the package, with whole games enough for a score comparison with 95% confidence "
        "intervals (written to OUTPUT/minatar-breakout).",
    )
    parser.add_argument("--checkpoint", default=None, help="checkpoint to use instead of the shipped Breakout fixture")
    parser.add_argument("--bits", type=_type(settings.count), default=8,
                        help="bits per spike code of the binary row (default 8)")
    parser.add_argument("--rate-T", type=_type(settings.count), default=None,
                        help="time steps per decision of the paper's row (default: the binary row's latency, "
                        "bits x weighted layers: 40 for the Nature CNN)")
    parser.add_argument("--minatar-games", type=_type(settings.whole_number), default=30,
                        help="whole games per player on the shipped MinAtar Breakout DQN (default 30; 0 skips it)")
    _add_test_frames(parser, 128, "the agreement curve")
    # each row fixes its coding, scales and readout (N + V): only the games and the calibration are options
    settings.add_options(parser, omit=("coding", "channel_wise", "readout", "residual_carry"),
                         defaults={"episodes": 2, "max_steps": 300, "calibration_frames": 1000})
    _add_game_options(parser)
    _add_output(parser, "output directory (default ./dqn2snn-demo)", required=False, default="dqn2snn-demo")
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from dqn2snn_plugin.experiments.demo import conversions, find_demo_checkpoint, run_demo, run_minatar_demo
    from dqn2snn_plugin.experiments.evaluation import resolve_device
    from dqn2snn_plugin.experiments.report import demo_scores_table, demo_table

    conversions(args.bits, args.rate_T, 1)  # refuses --bits above binary_coding.MAX_BITS and T beyond MAX_T
    if args.minatar_games < 0:
        raise ConfigError(f"--minatar-games must be at least 0 (0 skips the MinAtar part), got {args.minatar_games}")
    source = args.checkpoint or find_demo_checkpoint()
    run_settings, checkpoint = _load_for(args, source)
    print(f"checkpoint: {source}" + ("" if args.checkpoint else " (shipped with the package: a Breakout DQN, SB3 "
          "QNetwork weights after about 234k agent steps)"))
    result = run_demo(checkpoint, run_settings, args.output, bits=args.bits, rate_T=args.rate_T,
                      test_frames=args.test_frames)
    print(f"{checkpoint.env_id}: {run_settings.episodes} games of at most {run_settings.max_steps} steps per player "
          f"(epsilon = {run_settings.epsilon}), agreement = same greedy action as the DQN (N+V readout)")
    print(demo_table(result))
    out = Path(args.output)
    print(f"written: {out / 'result.json'}, {out / 'demo.md'}, {out / 'agreement_vs_latency.png'}")
    if args.minatar_games:
        result = run_minatar_demo(run_settings, out / "minatar-breakout", games=args.minatar_games, bits=args.bits,
                                  rate_T=args.rate_T, test_frames=args.test_frames, device=resolve_device(args.device))
        print(f"\n{result.header.env_id} (shipped with the package: a competent DQN, benchmarks/train_minatar.py): "
              f"{args.minatar_games} whole games per player (epsilon = {run_settings.epsilon}); its observations are "
              "0/1 planes, so the SNN's input is already spikes")
        print(demo_scores_table(result))
        print(f"written: {out / 'minatar-breakout'}/ (result.json, demo.md, scores.md, agreement_vs_latency.png)")
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _register_inspect, _register_evaluate, _register_sweep, _register_benchmark, _register_convert, _register_tune,
    _register_demo,
]


def build_parser() -> argparse.ArgumentParser:
    """The `dqn2snn` parser with every subcommand in `SUBCOMMANDS`."""
    from importlib.metadata import version

    parser = _Parser(prog="dqn2snn", description="Convert SB3 Deep Q-Networks into spiking networks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('dqn2snn_plugin')}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def _one_line_warning(message: Warning | str, *_args: object, **_kwargs: object) -> None:
    """A warning as one line, `dqn2snn: warning: <message>` (a cache not written, a damaged cache file)."""
    print(f"dqn2snn: warning: {message}", file=sys.stderr)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit fails no more."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 success, 2 usage or plugin error)."""
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit fails the write (one line), instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            status = args.handler(args)
        sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's own flush at exit
        return status
    except BrokenPipeError:
        # the reader went away (`dqn2snn inspect X | head`): stop quietly, as a command killed by SIGPIPE
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    except Dqn2SnnError as exc:
        print(f"dqn2snn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # `> /dev/full`: a stream write with no file name (files are written by `results`, which names them)
        if exc.filename is not None or exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EIO):
            raise
        _quiet_stdout()
        print(f"dqn2snn: error: cannot write the output: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dqn2snn: interrupted: nothing is lost (results are written whole or not at all; "
              "a sweep resumes where it stopped)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
