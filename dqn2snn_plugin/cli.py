"""The `dqn2snn` command line: one subcommand per task, each a `_register_<name>` + `_cmd_<name>` pair.

To add a subcommand, write `_register_<name>(subparsers)` (which sets `handler=_cmd_<name>`) and
`_cmd_<name>(args) -> int`, and list the register function in `SUBCOMMANDS`. A `Dqn2SnnError`
raised by any handler is printed as `dqn2snn: error: <message>` and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from dqn2snn_plugin.errors import Dqn2SnnError

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


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_inspect]


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
