"""The coding strategies: names map to objects, each coding's defaults and limits reach convert and the
network, and a new coding plugs in through `register` with its own schedule."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from dqn2snn_plugin import coding as coding_module
from dqn2snn_plugin import convert
from dqn2snn_plugin.coding import BINARY, CODINGS, DELTA, RATE, RateCoding, check_coding, register
from dqn2snn_plugin.engine import rate
from dqn2snn_plugin.errors import ConfigError


def test_a_coding_is_its_name_and_one_object():
    assert CODINGS == ("rate", "binary", "delta")
    assert check_coding("rate") is RATE and check_coding("binary") is BINARY and check_coding(BINARY) is BINARY
    assert BINARY == "binary" and f"{BINARY} T=8" == "binary T=8" and {"binary": 1}[BINARY] == 1
    assert copy.deepcopy(BINARY) is BINARY and pickle.loads(pickle.dumps(RATE)) is RATE


@pytest.mark.parametrize("name", ["sigma", "", None, 3])
def test_an_unknown_coding_is_refused_in_one_line(name):
    with pytest.raises(ConfigError, match="coding must be one of rate, binary, delta"):
        check_coding(name)


@pytest.mark.parametrize("scheme, T, v0", [(RATE, 64, 0.0), (BINARY, 8, 0.5)])
def test_convert_takes_its_defaults_from_the_coding(mlp_checkpoint, scheme, T, v0):
    snn = convert(mlp_checkpoint, torch.randn(100, 6), coding=scheme.name)
    assert (snn.coding, snn.T, snn.initial_membrane) == (scheme, scheme.default_T, v0) == (scheme, T, v0)


def test_each_coding_has_its_own_limit_on_T(mlp_checkpoint):
    assert RATE.check_T(25) == 25
    with pytest.raises(ConfigError, match="float32 resolves at most 24 bits, got T=25"):
        BINARY.check_T(25)
    snn = convert(mlp_checkpoint, torch.randn(100, 6), coding="binary")
    with pytest.raises(ConfigError, match="at most 24 bits"):
        snn(torch.randn(2, 6), T=25)


def test_only_a_coding_that_carries_state_may_keep_membranes(mlp_checkpoint):
    states = torch.randn(100, 6)
    for scheme in (RATE, BINARY, DELTA):
        snn = convert(mlp_checkpoint, states, coding=scheme, T=4)
        snn.carry_state = True
        if scheme.carries_state:
            snn(states[:3])
            assert snn._state is not None
        else:
            with pytest.raises(ConfigError, match="carry_state must be False"):
                snn(states[:3])


def test_latency_counts_the_layers_only_where_they_run_one_after_another():
    assert RATE.latency(16, 3) == 16
    assert BINARY.latency(8, 3) == 24  # 8 steps to integrate the observation, 8 per spiking layer
    assert DELTA.latency(8, 3) == 3  # each layer sends its changes in one step


class CountingCoding(RateCoding):
    """A coding defined outside the package: rate coding's neurons, its own defaults, a schedule that counts
    its calls (as a delta coding would bring its own)."""

    name = "counting"
    default_T = 5

    class Schedule(rate.RateSchedule):
        calls = 0

        def simulate(self, *args):
            type(self).calls += 1
            return super().simulate(*args)

    schedule = Schedule()


def test_a_new_coding_plugs_in_through_register(mlp_checkpoint, monkeypatch):
    monkeypatch.setattr(coding_module, "_KNOWN", dict(coding_module._KNOWN))
    monkeypatch.setattr(coding_module, "CODINGS", coding_module.CODINGS)
    counting = register(CountingCoding())
    assert coding_module.CODINGS == ("rate", "binary", "delta", "counting")
    states = torch.randn(100, 6)
    snn = convert(mlp_checkpoint, states, coding="counting")
    assert snn.coding is counting and snn.T == 5
    values = snn(states[:7])
    assert CountingCoding.Schedule.calls == 1
    reference = convert(mlp_checkpoint, states, coding="rate", T=5)
    assert torch.equal(values, reference(states[:7]))
