"""The environment protocol: presets, the one-flag text form, JSON for result files, and refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dqn2snn_plugin.envs.protocol import (
    PRESETS, AtariProtocol, MinAtarProtocol, check_protocol, parse_protocol, protocol_from_json,
)
from dqn2snn_plugin.errors import ConfigError


def test_presets_hold_what_their_sources_do():
    paper, sb3, cleanrl, ale = (PRESETS[name] for name in ("paper", "sb3", "cleanrl", "ale-v5"))
    assert (paper.frame_skip, paper.max_pool, paper.noop_max, paper.fire_reset, paper.stack_fill,
            paper.terminal_on_life_loss, paper.sticky_actions, paper.max_steps) == (4, True, 30, "ale", "zero", False, 0.0, 18_000)
    assert (sb3.fire_reset, sb3.terminal_on_life_loss, sb3.stack_fill, sb3.noop_max) == ("sb3", True, "zero", 30)
    assert (cleanrl.fire_reset, cleanrl.terminal_on_life_loss, cleanrl.stack_fill) == ("sb3", True, "copy")
    assert (ale.sticky_actions, ale.action_set, ale.noop_max, ale.env_version) == (0.25, "full", 0, "v5")
    assert PRESETS["minatar"] == MinAtarProtocol(sticky_actions=0.1, difficulty_ramping=True)


def test_the_issue_example_parses_and_writes_back():
    protocol = parse_protocol("paper,max_pool=false,noop_max=0,fire_reset=false,stack_fill=copy")
    assert protocol == AtariProtocol(max_pool=False, noop_max=0, fire_reset="off", stack_fill="copy")
    assert str(protocol) == "paper,max_pool=false,noop_max=0,fire_reset=off,stack_fill=copy"
    assert parse_protocol(" sb3 , sticky_actions = 0.25 ").sticky_actions == 0.25
    assert parse_protocol("paper,fire_reset=true").fire_reset == "ale"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_text_and_json(name):
    protocol = dataclasses.replace(PRESETS[name], max_steps=1234)
    assert str(PRESETS[name]) == name
    assert parse_protocol(str(protocol)) == protocol
    assert protocol_from_json(json.loads(json.dumps(protocol.to_json()))) == protocol


@pytest.mark.parametrize("text, message", [
    ("papr", "unknown protocol preset 'papr'"),
    ("paper,colour=red", "unknown protocol field 'colour=red'"),
    ("paper,noop_max", "unknown protocol field 'noop_max'"),
    ("minatar,max_pool=false", "unknown protocol field 'max_pool=false' for preset 'minatar'"),
    ("paper,max_pool=maybe", "bad protocol value max_pool='maybe': expected true or false"),
    ("paper,noop_max=1.5", "expected a whole number"),
    ("paper,sticky_actions=often", "expected a number"),
    ("paper,stack_fill=ones", "stack_fill must be one of zero, copy"),
    ("paper,noop_max=-1", "noop_max must lie in 0..1000"),
    ("paper,sticky_actions=1", r"sticky_actions must lie in \[0, 1\)"),
    ("paper,frame_skip=0", "frame_skip must lie in 1..64"),
    ("sb3,max_steps=0", "max_steps must be at least 1"),
])
def test_bad_text_is_one_clear_config_error(text, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_protocol(text)
    assert "\n" not in str(error.value)


def test_python_objects_are_checked_when_made():
    with pytest.raises(ConfigError, match="max_pool must be true or false"):
        AtariProtocol(max_pool="no")
    with pytest.raises(ConfigError, match="noop_max must be a whole number"):
        dataclasses.replace(PRESETS["sb3"], noop_max=2.5)
    with pytest.raises(ConfigError, match="preset must be one of paper"):
        AtariProtocol(preset="minatar")
    with pytest.raises(ConfigError, match="family 'atari' or 'minatar'"):
        protocol_from_json({"frame_skip": 4})
    with pytest.raises(ConfigError, match=r"unknown fields \['colour'\]"):
        protocol_from_json({**PRESETS["paper"].to_json(), "colour": "red"})


def test_check_protocol_takes_objects_text_or_none_for_the_right_family():
    assert check_protocol(None, "atari") == PRESETS["paper"]
    assert check_protocol(None, "minatar") == PRESETS["minatar"]
    assert check_protocol("cleanrl", "atari") == PRESETS["cleanrl"]
    with pytest.raises(ConfigError, match="for minatar games, not atari"):
        check_protocol(PRESETS["minatar"], "atari")
    with pytest.raises(ConfigError, match="got dict"):
        check_protocol({"preset": "paper"}, "atari")
