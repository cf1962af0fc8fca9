"""benchmarks/_common.py: where a user benchmark finds each game's DQN, and its one-line refusals."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common  # noqa: E402


def parsed(monkeypatch, argv: list[str], **options) -> argparse.Namespace:
    monkeypatch.setattr(sys, "argv", ["bench.py", *argv])
    parser = argparse.ArgumentParser()
    _common.add_game_options(parser, **options)
    return _common.parse(parser)


def test_a_fixtures_folder_comes_first_then_the_shipped_breakout_then_the_hub(tmp_path):
    assert _common.checkpoint_source("Pong", tmp_path) == tmp_path / "PongNoFrameskip-v4.qnet.pt"
    assert _common.checkpoint_source("Breakout", tmp_path) == tmp_path / "BreakoutNoFrameskip-v4.qnet.pt"
    assert _common.checkpoint_source("Breakout", None) == _common.SHIPPED
    assert _common.SHIPPED.is_file()
    assert _common.checkpoint_source("Pong", None) == "hf://sb3/dqn-PongNoFrameskip-v4"


def test_the_fixtures_folder_can_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(_common.FIXTURES_ENV, str(tmp_path))
    args = parsed(monkeypatch, ["--games", "Breakout, Pong", "--threads", "1"])
    assert args.fixtures == tmp_path and _common.games(args) == ["Breakout", "Pong"]
    monkeypatch.delenv(_common.FIXTURES_ENV)
    assert parsed(monkeypatch, [], games=None, threads=1).fixtures is None


@pytest.mark.parametrize("argv", [["--fixtures", "no/such/folder"], ["--threads", "0"]])
def test_bad_options_are_one_line_and_exit_status_2(monkeypatch, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        parsed(monkeypatch, argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("bench.py: error: ")


def test_the_shipped_breakout_loads_without_a_folder(monkeypatch):
    checkpoint = _common.load_game("Breakout", parsed(monkeypatch, ["--threads", "1"]))
    assert checkpoint.env_id == "BreakoutNoFrameskip-v4" and checkpoint.n_actions == 4


def test_a_game_missing_from_the_folder_ends_the_script_with_one_line_naming_it(monkeypatch, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        _common.load_game("Pong", parsed(monkeypatch, ["--fixtures", str(tmp_path), "--threads", "1"]))
    message = str(exit_.value.code)
    assert message.startswith("bench.py: error: Pong: ") and "\n" not in message and "--fixtures" in message
