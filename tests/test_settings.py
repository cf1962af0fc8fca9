"""RunSettings: each option declared once (flag, help, default, choices from the field), recorded in
every result's config, and a field added later gets its flag, its record and its resume check."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field, fields

import pytest

from dqn2snn_plugin.cli import build_parser
from dqn2snn_plugin.errors import ConfigError, ResultsError
from dqn2snn_plugin.experiments import settings as st
from dqn2snn_plugin.experiments.settings import RunSettings, add_options, from_args, option
from dqn2snn_plugin.io.results import CellLog
from dqn2snn_plugin.coding import CODINGS
from dqn2snn_plugin.engine import READOUTS


def _parser(**options) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_options(parser, **options)
    return parser


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())


def test_every_field_with_a_flag_gets_it_with_its_help_and_default():
    parser = _parser()
    text = _help(parser)
    for f in fields(RunSettings):
        flag = "--" + f.name.replace("_", "-")
        assert (flag in text) == f.metadata["flag"], f.name
        if f.metadata["flag"]:
            assert " ".join(f.metadata["help"].split())[:40] in text, f.name
    assert "(default 10; the paper's is 30)" in text and "(default 18,000, the paper's)" in text
    assert from_args(parser.parse_args([])) == RunSettings()  # the defaults are the fields' own


def test_choices_are_the_plugins_own_lists():
    text = _help(_parser())
    assert f"one of {', '.join(READOUTS)}" in text and f"one of {', '.join(CODINGS)}" in text
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'temporal'"):
        _parser().parse_args(["--coding", "temporal"])


def test_a_command_can_leave_fields_out_or_change_their_defaults():
    parser = _parser(omit=("episodes", "readout"), defaults={"max_steps": 300})
    text = _help(parser)
    assert "--episodes" not in text and "--readout" not in text and "(default 300; the paper's is 18,000)" in text
    assert from_args(parser.parse_args([])) == RunSettings(max_steps=300)


@pytest.mark.parametrize("argv, message", [(["--n-envs", "0"], "must be at least 1, got 0"),
                                           (["--seed", "x"], "expected a whole number, got 'x'"),
                                           (["--seed", "-1"], "seed must be a whole number from 0")])
def test_flag_values_are_checked_by_the_fields_parsers(argv, message):
    with pytest.raises(argparse.ArgumentError, match=message):
        _parser().parse_args(argv)


@pytest.mark.parametrize("parse, text, message", [
    (st.counts, ",", "expected comma-separated whole numbers"), (st.words, " , ", "expected a comma-separated list"),
    (st.nonblank, " ", "must not be empty"), (st.finite_number, "nan", "expected a finite number"),
    (st.finite_number, "-inf", "expected a finite number"), (st.finite_number, "two", "expected a number")])
def test_empty_lists_blank_text_and_non_finite_numbers_are_refused(parse, text, message):
    with pytest.raises(ConfigError, match=message):
        parse(text)


def test_fields_added_later_are_recorded_only_when_not_default():
    """Result directories written before `coding` and `channel_wise` existed stay resumable."""
    assert "coding" not in RunSettings().as_config() and "channel_wise" not in RunSettings().as_config()
    config = RunSettings(coding="binary", channel_wise=True).as_config()
    assert config["coding"] == "binary" and config["channel_wise"] is True
    assert set(RunSettings().as_config(omit=("seed",))) == {"episodes", "calibration_frames", "max_steps", "n_envs",
                                                            "backend", "readout", "epsilon", "protocol"}


def test_the_protocol_is_one_flag_recorded_in_every_config_and_read_back():
    """`--protocol paper,max_pool=false,...`: parsed into the protocol object, recorded as its text form (null for
    the family's default) and read back equal, so a resumed run with another protocol differs in its config."""
    from dqn2snn_plugin.envs.protocol import parse_protocol

    args = _parser().parse_args(["--protocol", "paper,max_pool=false,noop_max=0,stack_fill=copy"])
    run = st.from_args(args)
    assert run.protocol == parse_protocol("paper,max_pool=false,noop_max=0,stack_fill=copy")
    assert run.protocol.max_pool is False and run.protocol.noop_max == 0 and run.protocol.stack_fill == "copy"
    recorded = run.as_config()["protocol"]
    assert parse_protocol(recorded) == run.protocol
    assert RunSettings().as_config()["protocol"] is None
    assert RunSettings(protocol="paper,noop_max=0").protocol == parse_protocol("paper,noop_max=0")  # Python: text too
    assert RunSettings(protocol="paper,noop_max=0").as_config() != RunSettings().as_config()
    with pytest.raises(argparse.ArgumentError, match="protocol"):
        _parser().parse_args(["--protocol", "paper,max_pool=maybe"])


def test_env_id_and_input_scale_are_flags_recorded_only_when_given():
    run = st.from_args(_parser().parse_args(["--env-id", "MinAtar/Breakout-v1", "--input-scale", "1/255"]))
    assert run.env_id == "MinAtar/Breakout-v1" and run.input_scale == pytest.approx(1 / 255)
    assert run.as_config()["env_id"] == "MinAtar/Breakout-v1" and run.as_config()["input_scale"] == pytest.approx(1 / 255)
    assert "env_id" not in RunSettings().as_config() and "input_scale" not in RunSettings().as_config()
    for argv in (["--env-id", " "], ["--input-scale", "-1"], ["--input-scale", "1/0"]):
        with pytest.raises(argparse.ArgumentError):
            _parser().parse_args(argv)


@dataclass(frozen=True)
class Scale:
    """Stands for a setting whose value is an object (a coming `protocol`): parsed from one flag, JSON by to_json."""

    numerator: int
    denominator: int

    @classmethod
    def parse(cls, text: str) -> Scale:
        numerator, _, denominator = text.partition("/")
        return cls(st.count(numerator), st.count(denominator or "1"))

    def to_json(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class Later(RunSettings):
    """RunSettings with one field added after result folders exist, declared the documented way."""

    input_scale: Scale = field(default=Scale(1, 1), metadata=option(
        "multiplier of the observations", parse=Scale.parse, omit_default=True, to_json=Scale.to_json))


def test_a_field_added_later_gets_its_flag_its_record_and_its_resume_check(tmp_path):
    parser = _parser(cls=Later)
    assert "--input-scale" in _help(parser) and "multiplier of the observations (default 1/1)" in _help(parser)
    default, scaled = (from_args(parser.parse_args(argv), Later) for argv in ([], ["--input-scale", "1/255"]))
    assert scaled.input_scale == Scale(1, 255) and scaled.as_config()["input_scale"] == "1/255"
    assert default.as_config() == RunSettings().as_config()  # at its default: as before the field existed

    CellLog(tmp_path, {"settings": RunSettings().as_config()})  # a folder written before the field existed
    CellLog(tmp_path, {"settings": default.as_config()})  # resumes at the default
    with pytest.raises(ResultsError, match=r"settings\.input_scale: None there, '1/255' now"):
        CellLog(tmp_path, {"settings": scaled.as_config()})


def test_the_parser_is_built_and_help_shown_without_loading_torch():
    code = ("import sys; from dqn2snn_plugin.cli import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules, 'torch loaded'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--calibration-frames" in " ".join(build_parser()._subparsers._group_actions[0].choices["sweep"]
                                               .format_help().split())


def test_the_cost_options_are_declared_once_and_taken_by_the_commands_that_price_decisions():
    from dqn2snn_plugin.energy import HOROWITZ_45NM

    commands = build_parser()._subparsers._group_actions[0].choices
    for command in ("evaluate", "sweep", "benchmark", "demo"):
        text = " ".join(commands[command].format_help().split())
        assert "--cost-precision" in text and "--cost-weight-reads" in text, command
    for command in ("convert", "tune", "inspect"):
        assert "--cost-precision" not in commands[command].format_help(), command
    args = _parser().parse_args(["--cost-precision", "int8", "--cost-weight-reads", "per_decision"])
    priced = from_args(args)
    assert (priced.cost_precision, priced.cost_weight_reads) == ("int8", "per_decision")
    assert priced.as_config()["cost_precision"] == "int8"
    assert "cost_precision" not in RunSettings().as_config()  # at its default: folders written before resume
    swapped = RunSettings(energy_table=HOROWITZ_45NM.scaled(2)).as_config()["energy_table"]
    assert swapped["name"] == "Horowitz 2014, 45 nm x 2" and swapped["constants"]["fp32_add"] == 1.8
    for bad in ({"cost_precision": "fp16"}, {"cost_weight_reads": "never"}, {"energy_table": "cheap"}):
        with pytest.raises(ConfigError, match=next(iter(bad)).removeprefix("cost_")):
            RunSettings(**bad).check()
