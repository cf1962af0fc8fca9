"""What decides a result besides the checkpoint, T and p: `RunSettings`, each option declared once.

Every field carries its command-line help (and, where needed, its parser and choices) as field
metadata, as CleanRL's `Args` dataclass does, without tyro: `add_options` makes the argparse flags
from the fields, `from_args` maps the parsed flags back, and `as_config` is what every result file
records (the `settings` of `evaluate` and `demo`, the `config.json` of `sweep` and `benchmark`), which
`CellLog` compares when a run resumes. So a field added here gets its flag in every command that
does not omit it, is recorded in every result, and a resumed run whose value changed is refused.

A field added after result folders exist is declared with `option(..., omit_default=True)`: it is
recorded only when it differs from its default, so folders written before it existed (which were
made with that default) stay resumable. A field whose value is an object gives `to_json`.
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from dqn2snn_plugin.energy import HOROWITZ_45NM, PRECISIONS, WEIGHT_READS, EnergyTable, check_precision, check_weight_reads
from dqn2snn_plugin.errors import ConfigError, Dqn2SnnError

# The paper's protocol (Tan, Patel & Kozma 2021): whole games with this exploration, each cut at
# this many agent steps, this many games per player.
EPSILON = 0.05
PAPER_MAX_STEPS = 18_000
PAPER_EPISODES = 30

# env i of the games gets seed + i, the calibration and held-out states seed + k * TEST_SEED_OFFSET + i
# (k = 1, 2; `evaluation.calibration_draws`): all must stay below 2**31 (ale-py)
MAX_SEED = 2**30


DEVICES = ("cpu", "cuda")  # where the networks run (`evaluation.resolve_device`)


class Names(Collection[str]):
    """A tuple of names held by a module that loads torch (`engine.READOUTS`), read when first used:
    the command line builds its parser, and answers --help and --version, without loading torch."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _names(self) -> tuple[str, ...]:
        return getattr(importlib.import_module(self.module), self.name)

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


BACKENDS = Names("dqn2snn_plugin.conversion", "BACKENDS")
READOUTS = Names("dqn2snn_plugin.engine", "READOUTS")
CODINGS = Names("dqn2snn_plugin.coding", "CODINGS")


# ---------------------------------------------------------------- parsers of option values


def whole_number(text: str) -> int:
    """`text` as an int; ConfigError naming it otherwise."""
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"expected a whole number, got {text!r}") from None


def count(text: str) -> int:
    """A whole number of at least 1."""
    value = whole_number(text)
    if value < 1:
        raise ConfigError(f"must be at least 1, got {value}")
    return value


def counts(text: str) -> list[int]:
    """`8,16,32` -> [8, 16, 32], each at least 1; an empty list is refused."""
    values = [count(item) for item in text.split(",") if item.strip()]
    if not values:
        raise ConfigError(f"expected comma-separated whole numbers, got {text!r}")
    return values


def words(text: str) -> list[str]:
    """`99,99.9,max` -> ["99", "99.9", "max"] (values are checked later); an empty list is refused."""
    values = [item.strip() for item in text.split(",") if item.strip()]
    if not values:
        raise ConfigError(f"expected a comma-separated list, got {text!r}")
    return values


def nonblank(value: str) -> str:
    """A non-blank string (an id, a name)."""
    if not value.strip():
        raise ConfigError("must not be empty")
    return value


def finite_number(text: str) -> float:
    """A finite number (nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {text!r}")
    return value


def check_seed(seed: int) -> int:
    """A seed in 0 .. MAX_SEED; ConfigError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED:,}, got {seed!r}")
    return int(seed)


def seed_number(text: str) -> int:
    """A seed in 0 .. MAX_SEED."""
    return check_seed(whole_number(text))


def protocol_text(text: str) -> object:
    """An environment protocol from its text form (`paper,max_pool=false,...`; `envs.protocol`)."""
    from dqn2snn_plugin.envs.protocol import parse_protocol

    return parse_protocol(text)


def input_scale(text: str) -> float:
    """A positive input scale such as `1/255` or `0.5` (`checkpoint.parse_input_scale`)."""
    from dqn2snn_plugin.checkpoint import parse_input_scale

    return parse_input_scale(text)


def residual_carry_text(text: str) -> object:
    """A residual carry (CRPI) from its text `SCALE[,CLIP]` (`network.ResidualCarry.parse`)."""
    from dqn2snn_plugin.network import ResidualCarry

    return ResidualCarry.parse(text)


def as_text(value: object) -> str | None:
    """An option object as result files record it: its text form, which its parser reads back."""
    return None if value is None else str(value)


def argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` as an argparse `type`: its ConfigError becomes argparse's one-line usage error."""
    def convert(value: str) -> Any:
        try:
            return parse(value)
        except Dqn2SnnError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__  # argparse names the type in some messages
    return convert


# ---------------------------------------------------------------- the settings


def option(help: str, *, parse: Callable[[str], Any] | None = None, choices: Collection[str] | None = None,
           paper: object = None, flag: bool = True, omit_default: bool = False,
           to_json: Callable[[Any], Any] | None = None) -> dict:
    """Field metadata of a setting: its help text (the default is added), its parser from the flag's
    text, its choices, the paper's value (named in the help), whether it has a flag, whether it is
    recorded only when not default (`omit_default`, for fields added later) and its JSON form."""
    return {"help": help, "parse": parse, "choices": choices, "paper": paper, "flag": flag,
            "omit_default": omit_default, "to_json": to_json}


@dataclass(frozen=True)
class RunSettings:
    """Everything besides the checkpoint, T and p that decides a result (compared on resume)."""

    episodes: int = field(default=10, metadata=option("whole games per player, epsilon = 0.05", parse=count,
                                                      paper=PAPER_EPISODES))
    calibration_frames: int = field(default=5000, metadata=option(
        "DQN-visited frames for the layer scales, from episodes separate from the measured games; cached on disk",
        parse=count))
    max_steps: int = field(default=PAPER_MAX_STEPS, metadata=option("agent steps after which an episode is cut",
                                                                    parse=count, paper=PAPER_MAX_STEPS))
    n_envs: int = field(default=8, metadata=option("games played in parallel", parse=count))
    seed: int = field(default=0, metadata=option("seed of the envs and of the exploration", parse=seed_number))
    backend: str = field(default="spikingjelly", metadata=option("neuron framework", choices=BACKENDS))
    readout: str = field(default="spikes+membrane", metadata=option(
        "SNN readout the SNN acts on (spikes+membrane is N + V)", choices=READOUTS, paper="spikes+membrane"))
    epsilon: float = field(default=EPSILON, metadata=option("exploration of the games", flag=False, paper=EPSILON))
    coding: str = field(default="rate", metadata=option(
        "rate: the paper's rate-coded IF neurons, T steps per decision; binary: T-bit spike codes, T steps per "
        "layer, at most 24 (dqn2snn_plugin.binary_coding; measured best with --percentile 99.99 --channel-wise "
        "and T = 8); delta: binary coding's network carried per env between observations, sending only "
        "changes (dqn2snn_plugin.engine.delta)", choices=CODINGS, paper="rate", omit_default=True))
    channel_wise: bool = field(default=False, metadata=option("one scale per channel instead of per layer",
                                                              omit_default=True))
    env_id: str | None = field(default=None, metadata=option(
        "the game or task, where the checkpoint's file name does not name it: <Game>NoFrameskip-v4, "
        "ALE/<Game>-v5, MinAtar/<Game>-v1 or a gymnasium id such as CartPole-v1", parse=nonblank,
        omit_default=True))
    protocol: Any = field(default=None, metadata=option(
        "how the game is played: a preset (Atari: paper, sb3, cleanrl, ale-v5; MinAtar: minatar) and "
        "field=value overrides, e.g. paper,max_pool=false,noop_max=0,fire_reset=false,stack_fill=copy "
        "(dqn2snn_plugin.envs.protocol; default: paper for Atari, minatar for MinAtar)", parse=protocol_text,
        to_json=as_text))
    input_scale: float | None = field(default=None, metadata=option(
        "how raw observations are scaled where the checkpoint does not record it, e.g. 1/255 "
        "(dqn2snn_plugin.checkpoint.parse_input_scale; default: what the checkpoint records, else x 1)",
        parse=input_scale, omit_default=True))
    residual_carry: Any = field(default=None, metadata=option(
        "carry each neuron's residual membrane to the next decision of the same game (CRPI, Xu et al. ICML 2026): "
        "SCALE[,CLIP], the next start = half threshold + clip(SCALE x residual, -CLIP, CLIP), SCALE in [0, 1], "
        "CLIP in (0, 1] (CRPI's: 0.5; its SCALE is searched over 0..1 per task); rate coding only "
        "(dqn2snn_plugin.network.ResidualCarry; default: every decision starts afresh, the paper's)",
        parse=residual_carry_text, to_json=as_text, omit_default=True))

    # what a decision is priced at (dqn2snn_plugin.costs, docs/costs.md); not a simulation setting
    cost_precision: str = field(default="fp32", metadata=option(
        "precision the SNN's energy per decision is priced at: fp32 (what is simulated) or int8 (int8 weights, "
        "32-bit membranes: a price only, the decisions are simulated in fp32); the DQN is priced in both",
        choices=PRECISIONS, omit_default=True))
    cost_weight_reads: str = field(default="per_event", metadata=option(
        "how the SNN's weights are read in its energy per decision: per_event (each synaptic event reads its "
        "weight, as event-driven hardware does), per_decision (each weight once, all held close: the optimistic "
        "bound) or least (per layer the lesser: a kernel kept while it serves its events, as the DQN's count "
        "assumes)", choices=WEIGHT_READS, omit_default=True))
    energy_table: EnergyTable = field(default=HOROWITZ_45NM, metadata=option(
        "the energy of each operation and memory access (dqn2snn_plugin.energy.EnergyTable; Python API only)",
        flag=False, omit_default=True, to_json=EnergyTable.to_json))

    def __post_init__(self) -> None:
        """A protocol or residual carry given as text (the Python API's `protocol="paper,noop_max=0"`,
        `residual_carry="0.5"`) becomes the object."""
        if isinstance(self.protocol, str):
            object.__setattr__(self, "protocol", protocol_text(self.protocol))
        if isinstance(self.residual_carry, str):
            object.__setattr__(self, "residual_carry", residual_carry_text(self.residual_carry))

    def check(self) -> RunSettings:
        """Raise ConfigError for any out-of-range value; return self."""
        for name in ("episodes", "calibration_frames", "max_steps", "n_envs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must lie in [0, 1], got {self.epsilon}")
        from dqn2snn_plugin.coding import check_coding
        from dqn2snn_plugin.network import check_readout

        check_seed(self.seed)
        check_precision(self.cost_precision)
        check_weight_reads(self.cost_weight_reads)
        if not isinstance(self.energy_table, EnergyTable):
            raise ConfigError(f"energy_table must be an EnergyTable, got {type(self.energy_table).__name__}")
        check_readout(self.readout)
        refusal = check_coding(self.coding).residual_carry_refusal()
        if self.residual_carry is not None and refusal:
            raise ConfigError(f"--residual-carry needs rate coding: {refusal}")
        check_coding(self.coding)
        return self

    def as_config(self, omit: Collection[str] = ()) -> dict:
        """The settings as result files record them (JSON-ready), less the fields in `omit`; fields
        declared `omit_default` appear only when they differ from their defaults."""
        config = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in omit or (f.metadata["omit_default"] and value == f.default):
                continue
            config[f.name] = (f.metadata["to_json"] or (lambda v: v))(value)
        return config


# ---------------------------------------------------------------- the command-line options


def _default_help(default: object, paper: object) -> str:
    shown = f"{default:,}" if isinstance(default, int) and not isinstance(default, bool) else f"{default}"
    if default is None:
        return ""  # the help says what happens without the option
    if paper is None:
        return f" (default {shown})"
    if default == paper:
        return f" (default {shown}, the paper's)"
    return f" (default {shown}; the paper's is {paper:,})" if isinstance(paper, int) else \
        f" (default {shown}; the paper's is {paper})"


def add_options(parser: argparse.ArgumentParser, *, omit: Collection[str] = (),
                defaults: Mapping[str, object] | None = None, cls: type[RunSettings] = RunSettings) -> None:
    """One flag per `RunSettings` field (`--calibration-frames` for `calibration_frames`), with its help,
    parser, choices and default; `omit` leaves fields out (a command that would ignore them),
    `defaults` replaces a field's default for this command (shown in the help)."""
    defaults = defaults or {}
    for f in fields(cls):
        meta = f.metadata
        if f.name in omit or not meta["flag"]:
            continue
        name, default = "--" + f.name.replace("_", "-"), defaults.get(f.name, f.default)
        if isinstance(f.default, bool):
            parser.add_argument(name, action="store_true", help=meta["help"])
            continue
        kwargs: dict[str, Any] = {}
        shown = meta["to_json"](default) if meta["to_json"] and default is not None else default
        help = meta["help"] + _default_help(shown, meta["paper"])
        if meta["choices"] is not None:  # named by the help when shown, so torch is loaded only then
            kwargs.update(choices=meta["choices"], metavar=f.name.upper())
            help += "; one of %(choices)s"
        if meta["parse"] is not None:
            kwargs["type"] = argparse_type(meta["parse"])
        parser.add_argument(name, default=default, help=help, **kwargs)


COST_FIELDS = ("cost_precision", "cost_weight_reads", "energy_table")  # for commands that price no decision


def fields_except(*names: str, cls: type[RunSettings] = RunSettings) -> tuple[str, ...]:
    """Every field but `names`: the `omit` of a command that takes only those options."""
    return tuple(f.name for f in fields(cls) if f.name not in names)


def from_args(args: argparse.Namespace, cls: type[RunSettings] = RunSettings) -> RunSettings:
    """RunSettings from parsed options, checked; fields a command does not take keep their defaults."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}).check()
