"""The `dqn2snn` command line: one subcommand per task, each a `_register_<name>` + `_cmd_<name>` pair.

To add a subcommand, write `_register_<name>(subparsers)` (which sets `handler=_cmd_<name>`) and
`_cmd_<name>(args) -> int`, and list the register function in `SUBCOMMANDS`. A `Dqn2SnnError`
raised by any handler is printed as `dqn2snn: error: <message>` and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dqn2snn_plugin.errors import Dqn2SnnError
from dqn2snn_plugin.results import markdown_table, writable_dir, write_json


def _register_inspect(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise a DQN checkpoint (algorithm, shapes, layers)",
        description="Load a DQN checkpoint safely and print what it holds: algorithm, policy, SB3 version, "
        "observation shape, number of actions, layers with their shapes, parameter count.",
    )
    parser.add_argument("checkpoint", help="SB3 .zip, QNetwork .pt state dict, or hf://<org>/<repo>")
    parser.add_argument("--env-id", default=None, help="environment id, overriding the one in the file name")
    parser.set_defaults(handler=_cmd_inspect)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from dqn2snn_plugin.checkpoint import describe, load_dqn

    print(describe(load_dqn(args.checkpoint, env_id=args.env_id)))
    return 0


def _int_list(text: str) -> list[int]:
    """`8,16,32` -> [8, 16, 32] (argparse type)."""
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    """`99,99.9,max` -> ["99", "99.9", "max"] (argparse type; values are checked later)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-id", default=None,
                        help="<Game>NoFrameskip-v4 id, overriding the one in the checkpoint's file name")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the networks run (cuda only when a GPU exists; default cpu)")


def _add_run_options(parser: argparse.ArgumentParser, *, episodes: int = 10, max_steps: int = 18_000,
                     calibration_frames: int = 5000) -> None:
    """The options of `RunSettings` (what decides a result besides T and p)."""
    parser.add_argument("--episodes", type=int, default=episodes,
                        help=f"whole games per player, epsilon = 0.05 (default {episodes})")
    parser.add_argument("--readout", default="spikes+membrane", choices=["spikes", "spikes+membrane", "membrane"],
                        help="SNN readout the SNN acts on (default: the paper's spikes+membrane, N + V)")
    parser.add_argument("--backend", default="spikingjelly", choices=["spikingjelly", "snntorch"],
                        help="neuron framework (default spikingjelly)")
    parser.add_argument("--calibration-frames", type=int, default=calibration_frames,
                        help=f"DQN-visited frames for the layer scales, cached on disk (default {calibration_frames})")
    parser.add_argument("--max-steps", type=int, default=max_steps,
                        help=f"agent steps after which an episode is cut (default {max_steps:,}, the paper's)")
    parser.add_argument("--n-envs", type=int, default=8, help="games played in parallel (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the envs and of the exploration (default 0)")


def _add_conversion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel-wise", action="store_true", help="one scale per channel instead of per layer")
    parser.add_argument("--coding", default="rate", choices=["rate", "binary"],
                        help="rate: the paper's rate-coded IF neurons, T steps per decision; binary: T-bit spike "
                        "codes, T steps per layer, at most 24 (dqn2snn_plugin.binary_coding; measured best with "
                        "--percentile 99.99 --channel-wise and T = 8)")


def _settings(args: argparse.Namespace):
    from dqn2snn_plugin.evaluation import RunSettings

    return RunSettings(episodes=args.episodes, calibration_frames=args.calibration_frames, max_steps=args.max_steps,
                       n_envs=args.n_envs, seed=args.seed, backend=args.backend, readout=args.readout,
                       coding=getattr(args, "coding", "rate"), channel_wise=getattr(args, "channel_wise", False)).check()


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score and agreement of the DQN and its SNN at one (T, percentile)",
        description="Convert CKPT at one percentile, play whole games with the DQN and with the SNN "
        "(epsilon = 0.05), and report scores (mean ± std), agreement of greedy actions on the states each "
        "one visits (spikes and spikes+membrane readouts) and spikes per decision.",
    )
    parser.add_argument("checkpoint", help="SB3 .zip, QNetwork .pt state dict, or hf://<org>/<repo>")
    parser.add_argument("--T", type=int, default=64, help="time steps per decision (default 64)")
    parser.add_argument("--percentile", default="99.9", help="normalisation percentile in (0, 100] or max (default 99.9)")
    _add_run_options(parser)
    _add_conversion_options(parser)
    _add_checkpoint_options(parser)
    parser.add_argument("-o", "--output", default=None, help="write the full result as JSON to this file")
    parser.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dqn2snn_plugin import evaluation as ev

    T, (p,) = args.T, ev.check_grid([args.T], [args.percentile], args.coding)[1]
    settings = _settings(args)
    device = ev.resolve_device(args.device)
    if args.output:
        writable_dir(Path(args.output).parent)
    checkpoint = ev.load_checked(args.checkpoint, env_id=args.env_id, device=device)
    result = ev.evaluate(checkpoint, T=T, percentile=p, settings=settings)
    print(ev.format_evaluation(result))
    if args.output:
        write_json(args.output, result)
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
    parser.add_argument("checkpoint", help="SB3 .zip, QNetwork .pt state dict, or hf://<org>/<repo>")
    parser.add_argument("--T", type=_int_list, default=[8, 16, 32, 64, 128, 256, 500],
                        help="comma-separated time steps per decision (default 8,16,32,64,128,256,500)")
    parser.add_argument("--percentile", type=_str_list, default=["99", "99.9", "99.99", "max"],
                        help="comma-separated percentiles in (0, 100] or max (default 99,99.9,99.99,max)")
    parser.add_argument("--test-frames", type=int, default=1000,
                        help="held-out DQN-visited states for the agreement-vs-T curve (default 1000)")
    _add_run_options(parser)
    _add_conversion_options(parser)
    _add_checkpoint_options(parser)
    parser.add_argument("-o", "--output", required=True, help="results directory (created; reused to resume)")
    parser.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from dqn2snn_plugin import evaluation as ev
    from dqn2snn_plugin.sweep import SWEEP_HEADERS, sweep

    Ts, ps = ev.check_grid(args.T, args.percentile, args.coding)
    settings = _settings(args)
    device = ev.resolve_device(args.device)
    writable_dir(args.output)
    checkpoint = ev.load_checked(args.checkpoint, env_id=args.env_id, device=device)
    rows = sweep(checkpoint, Ts, ps, settings, args.output, test_frames=args.test_frames)
    print(markdown_table(SWEEP_HEADERS, rows))
    print(f"results in {args.output}/ (sweep.csv, sweep.md, score_vs_T.png, agreement_vs_T.png)")
    return 0


def _register_benchmark(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="the paper's table over many games",
        description="Evaluate each checkpoint (or every .zip/.pt/.pth in a directory) at one (T, percentile) and "
        "write the paper's table (game, DQN score, SNN score, agreement, T, p, spikes per decision) as "
        "DIR/benchmark.md and DIR/benchmark.csv, plus DIR/<env id>.json per game.",
    )
    parser.add_argument("checkpoints", nargs="+", help="checkpoints or directories of checkpoints")
    parser.add_argument("--T", type=int, default=500, help="time steps per decision (default 500, the paper's)")
    parser.add_argument("--percentile", default="99.9", help="normalisation percentile in (0, 100] or max (default 99.9)")
    _add_run_options(parser)
    _add_conversion_options(parser)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the networks run (cuda only when a GPU exists; default cpu)")
    parser.add_argument("-o", "--output", required=True, help="results directory (created)")
    parser.set_defaults(handler=_cmd_benchmark)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from dqn2snn_plugin import evaluation as ev

    ev.check_grid([args.T], [args.percentile], args.coding)
    settings = _settings(args)
    device = ev.resolve_device(args.device)
    writable_dir(args.output)
    checkpoints = [ev.load_checked(s, device=device) for s in ev.checkpoint_sources(args.checkpoints)]
    rows = ev.benchmark(checkpoints, T=args.T, percentile=args.percentile, settings=settings, out_dir=args.output)
    print(markdown_table(ev.BENCHMARK_HEADERS, rows))
    print(f"results in {args.output}/ (benchmark.md, benchmark.csv)")
    return 0


def _register_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a DQN and save the SNN (reload with dqn2snn_plugin.store.load_snn)",
        description="Calibrate on the DQN's own play, convert, and save OUT/snn.pt (load it with "
        "dqn2snn_plugin.store.load_snn), OUT/scales.json and, for rate coding, OUT/snn.nir (the NIR graph: "
        "dqn2snn_plugin.from_nir, or dqn2snn_plugin.adapters.nir.load_nir for SpikingJelly, snnTorch, Sinabs).",
    )
    parser.add_argument("checkpoint", help="SB3 .zip, QNetwork .pt state dict, or hf://<org>/<repo>")
    parser.add_argument("--T", type=int, default=64, help="default time steps per decision (default 64)")
    parser.add_argument("--percentile", default="99.9", help="normalisation percentile in (0, 100] or max (default 99.9)")
    _add_run_options(parser)
    _add_conversion_options(parser)
    _add_checkpoint_options(parser)
    parser.add_argument("-o", "--output", required=True, help="output directory (created)")
    parser.set_defaults(handler=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from dqn2snn_plugin import evaluation as ev
    from dqn2snn_plugin.conversion import convert
    from dqn2snn_plugin.store import save_snn

    _, (p,) = ev.check_grid([args.T], [args.percentile], args.coding)
    settings = _settings(args)
    device = ev.resolve_device(args.device)
    out = writable_dir(args.output)
    checkpoint = ev.load_checked(args.checkpoint, env_id=args.env_id, device=device)
    snn = convert(checkpoint, ev.calibration_states(checkpoint, settings), percentile=p,
                  channel_wise=settings.channel_wise, backend=settings.backend, readout=settings.readout, T=args.T,
                  coding=settings.coding)
    save_snn(snn, checkpoint, out / "snn.pt")
    write_json(out / "scales.json", snn.scales.as_dict())
    print(f"saved {out / 'snn.pt'} and {out / 'scales.json'}")
    if snn.coding == "binary":
        print("no snn.nir: binary spike coding has no NIR form (its IF neurons change threshold between steps)")
    else:
        from dqn2snn_plugin.nir_graph import save_nir

        save_nir(snn, out / "snn.nir", provenance={
            "checkpoint": checkpoint.source, "checkpoint_sha": ev.checkpoint_digest(checkpoint),
            "env_id": checkpoint.env_id, "algorithm": checkpoint.algorithm,
            "calibration_frames": settings.calibration_frames, "seed": settings.seed})
        print(f"saved {out / 'snn.nir'} (NIR graph; run it elsewhere with dqn2snn_plugin.adapters.nir.load_nir)")
    return 0


def _register_tune(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help="find the cheapest T whose tuned SNN reaches a target agreement, and save it",
        description="For T = 4, 8, 16, ... try percentiles, initial membranes and bias calibration "
        "(dqn2snn_plugin.tuning; with --distill also a distilled copy), choose on held-out calibration states, stop at the first T whose "
        "agreement with the DQN reaches the target, and save OUT/snn.pt and OUT/tuning.json.",
    )
    parser.add_argument("checkpoint", help="SB3 .zip, QNetwork .pt state dict, or hf://<org>/<repo>")
    parser.add_argument("--target-agreement", type=float, default=0.99,
                        help="agreement with the DQN's greedy action to reach, in (0, 1] (default 0.99)")
    parser.add_argument("--T", type=_int_list, default=None,
                        help="time steps to try, cheapest first (default 4,8,16,32,64,128; with --coding binary "
                        "2,4,6,8,10,12,16)")
    parser.add_argument("--distill", action="store_true",
                        help="also try a copy distilled for each T (dqn2snn_plugin.distillation; "
                        "minutes per T on a CPU, seconds on a GPU)")
    _add_run_options(parser)
    _add_conversion_options(parser)
    _add_checkpoint_options(parser)
    parser.add_argument("-o", "--output", required=True, help="output directory (created)")
    parser.set_defaults(handler=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dqn2snn_plugin import evaluation as ev
    from dqn2snn_plugin.store import save_snn
    from dqn2snn_plugin.tuning import cheapest_T

    from dqn2snn_plugin.errors import ConfigError

    default_Ts = [2, 4, 6, 8, 10, 12, 16] if args.coding == "binary" else [4, 8, 16, 32, 64, 128]
    Ts, _ = ev.check_grid(args.T or default_Ts, ["max"], args.coding)
    if not 0.0 < args.target_agreement <= 1.0:
        raise ConfigError(f"--target-agreement must be in (0, 1], got {args.target_agreement}")
    settings = _settings(args)
    device = ev.resolve_device(args.device)
    out = writable_dir(args.output)
    checkpoint = ev.load_checked(args.checkpoint, env_id=args.env_id, device=device)
    snn = cheapest_T(checkpoint, ev.calibration_states(checkpoint, settings), args.target_agreement, Ts,
                     backend=settings.backend, distillation=args.distill, coding=settings.coding,
                     channel_wise=settings.channel_wise)
    save_snn(snn, checkpoint, out / "snn.pt")
    report = {"T": snn.T, "reached_target": snn.reached_target, "target": args.target_agreement,
              "validation_agreement": snn.validation_agreement,
              "options": [asdict(r) for r in snn.tuning_report]}
    write_json(out / "tuning.json", report)
    verdict = "reaches" if snn.reached_target else "does not reach (best found)"
    print(f"T={snn.T}: validation agreement {snn.validation_agreement:.1%} {verdict} the target "
          f"{args.target_agreement:.1%}; best option {asdict(snn.tuning_report[0])}")
    print(f"saved {out / 'snn.pt'} and {out / 'tuning.json'}")
    return 0


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="convert the shipped Breakout DQN, play short games as an SNN, plot agreement vs T",
        description="Convert the shipped Breakout fixture DQN (or --checkpoint), play a few short games with the DQN "
        "and the SNN, print the table and write result.json, heldout.md and agreement_vs_T.png to the output directory.",
    )
    parser.add_argument("--checkpoint", default=None, help="checkpoint to use instead of the shipped Breakout fixture")
    parser.add_argument("--T", type=int, default=32, help="time steps per decision while playing (default 32)")
    parser.add_argument("--curve-T", type=_int_list, default=[8, 16, 32, 64, 128, 256],
                        help="T values of the held-out agreement curve (default 8,16,32,64,128,256)")
    parser.add_argument("--test-frames", type=int, default=256, help="held-out states for the curve (default 256)")
    _add_run_options(parser, episodes=3, max_steps=500, calibration_frames=2000)
    _add_checkpoint_options(parser)
    parser.add_argument("-o", "--output", default="dqn2snn-demo", help="output directory (default ./dqn2snn-demo)")
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from dqn2snn_plugin import evaluation as ev

    ev.check_grid([args.T, *args.curve_T], [99.9])
    settings = _settings(args)
    device = ev.resolve_device(args.device)
    out = writable_dir(args.output)
    source = args.checkpoint or ev.find_demo_checkpoint()
    print(f"checkpoint: {source}" + ("" if args.checkpoint else " (shipped with the package: the Breakout fixture "
          "DQN of ../shared/fixtures/atari-dqn, SB3 QNetwork weights after about 234k agent steps)"))
    checkpoint = ev.load_checked(source, env_id=args.env_id, device=device)
    result, _ = ev.demo(checkpoint, T=args.T, Ts=args.curve_T, settings=settings, out_dir=out,
                        test_frames=args.test_frames)
    print(ev.format_evaluation(result))
    print((out / "heldout.md").read_text().rstrip())
    print(f"written: {out / 'result.json'}, {out / 'heldout.md'}, {out / 'agreement_vs_T.png'}")
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _register_inspect, _register_evaluate, _register_sweep, _register_benchmark, _register_convert, _register_tune,
    _register_demo,
]


def build_parser() -> argparse.ArgumentParser:
    """The `dqn2snn` parser with every subcommand in `SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(prog="dqn2snn", description="Convert SB3 Deep Q-Networks into spiking networks.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 success, 2 usage or plugin error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except Dqn2SnnError as exc:
        print(f"dqn2snn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
