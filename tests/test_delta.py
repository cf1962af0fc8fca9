"""Delta coding (`engine/delta.py`): every decision against a quantised network computed here by separate
plain code (every layer's levels and membranes, exactly), against binary coding's decisions, over
consecutive game states of the shipped Breakout DQN with per-env state and resets; the statistics against
counts made here from the observations and the reference levels."""

import contextlib
import math
from importlib.resources import files

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dqn2snn_plugin import collect_observations, convert, load_dqn
from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.coding import BINARY, DELTA, check_coding
from dqn2snn_plugin.engine import delta
from dqn2snn_plugin.engine.stats import weighted
from dqn2snn_plugin.errors import ConfigError, NirError
from dqn2snn_plugin.experiments.evaluation import _SnnPlayer
from dqn2snn_plugin.io.nir_graph import to_nir
from dqn2snn_plugin.io.store import load_snn, save_snn

T = 8
L = 2**T - 1


@pytest.fixture(scope="module")
def breakout():
    """The shipped Breakout DQN and 300 consecutive states of its own play in one env (episodes in turn)."""
    checkpoint = load_dqn(files("dqn2snn_plugin") / "data" / "BreakoutNoFrameskip-v4.qnet.pt")
    return checkpoint, collect_observations(checkpoint, n_frames=300, n_envs=1, seed=3)


def delta_snn(checkpoint, states):
    return convert(checkpoint, states, percentile=99.99, channel_wise=True, coding="delta", T=T)


def reference(snn, obs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The quantised network on `obs` alone, plain float64 passes with the rounded weights: (membranes of
    every layer with the output's, levels of every spiking layer)."""
    x = torch.as_tensor(np.asarray(obs), dtype=torch.float64)
    membranes, levels = [], []
    for index, (stage, (w, b)) in enumerate(zip(snn.synapses, delta.rounded(snn, T))):
        if index:
            levels.append(torch.clamp(torch.floor(membranes[-1] + 0.5), 0, L))
            x = levels[-1]
        if isinstance(weighted(stage), nn.Conv2d):
            layer = weighted(stage)
            v = F.conv2d(x, w, stride=layer.stride, padding=layer.padding) + b[:, None, None] * (L if index else 1)
        else:
            v = x.flatten(1) @ w.T + b * (L if index else 1)
        membranes.append(v * L if index == 0 else v)
    return membranes, levels


def test_delta_is_binary_coding_carried_between_decisions():
    assert check_coding("delta") is DELTA and DELTA.graded_events and not BINARY.graded_events
    assert DELTA.carries_state and not DELTA.nir_exportable
    assert (DELTA.default_T, DELTA.levels(8), DELTA.initial_membrane) == (8, 255, "half")
    assert DELTA.latency(8, 5) == 5  # one step per weighted layer
    with pytest.raises(ConfigError, match="at most 24 bits"):
        DELTA.check_T(25)


def test_rounding_keeps_every_sum_on_a_grid_float64_adds_exactly(breakout):
    checkpoint, states = breakout
    snn = delta_snn(checkpoint, states[:50])
    for index, (stage, (w, b)) in enumerate(zip(snn.synapses, delta.rounded(snn, T))):
        original = weighted(stage).weight.detach().double()
        largest_input = 255 if index == 0 else L
        bound = float((L * (w.abs().flatten(1).sum(1) * largest_input + b.abs())).max())
        step = 2.0 ** (51 - math.ceil(math.log2(bound)))  # bound * step <= 2**51 < 2**53
        assert torch.equal(w * step, torch.round(w * step)) and torch.equal(b * step, torch.round(b * step))
        assert float((w - original).abs().max()) <= 0.5 / step
        assert float((w - original).abs().max()) < 1e-6 * float(original.abs().max())


def check_against_reference(snn, obs, rows=None) -> None:
    """The carried state of `rows` (all, in order) after a decision on `obs` is the reference's, exactly."""
    state = snn._state if rows is None else [v[torch.as_tensor(rows)] for v in snn._state]
    membranes, levels = reference(snn, obs)
    assert torch.equal(state[0].double(), torch.as_tensor(np.asarray(obs), dtype=torch.float64))
    for index, v in enumerate(membranes):
        assert torch.equal(state[1 + 2 * index], v), f"membranes of layer {index}"
    for index, q in enumerate(levels):
        assert torch.equal(state[2 + 2 * index], q), f"levels of layer {index}"


@pytest.mark.slow
def test_every_decision_equals_the_quantised_network_neuron_for_neuron(breakout):
    checkpoint, states = breakout
    snn = delta_snn(checkpoint, states)
    snn.carry_state = True
    q_delta = []
    for obs in states:
        q_delta.append(snn(obs[None]))
        check_against_reference(snn, obs[None])
        membranes, _ = reference(snn, obs[None])
        assert torch.equal(q_delta[-1], (membranes[-1] / L).float())
    # binary coding at the same T on a float64 copy with the rounded weights: the same Q-values
    binary = convert(checkpoint, states, percentile=99.99, channel_wise=True, coding="binary", T=T).double()
    with torch.no_grad():
        for stage, (w, b) in zip(binary.synapses, delta.rounded(snn, T)):
            weighted(stage).weight.copy_(w)
            weighted(stage).bias.copy_(b)
    assert torch.equal(torch.cat(q_delta), binary(states).float())
    # and the float32 binary-coded SNN takes the same action nearly everywhere (its sums round)
    float32 = convert(checkpoint, states, percentile=99.99, channel_wise=True, coding="binary", T=T)
    assert float((float32.act(states) == torch.cat(q_delta).argmax(1)).float().mean()) >= 0.99


def fan_in_axis(size: int, kernel: int, stride: int, outputs: int) -> np.ndarray:
    """How many windows of a convolution along one axis hold each input position (hand formula)."""
    return np.array([sum(o * stride <= y < o * stride + kernel for o in range(outputs)) for y in range(size)])


def test_statistics_count_the_changes_and_their_targets(breakout):
    checkpoint, states = breakout
    snn = delta_snn(checkpoint, states[:50])
    snn.carry_state = True
    before, after = states[20:21], states[21:22]
    snn(before)
    snn(after)
    stats = snn.last_stats
    changed = before[0] != after[0]  # [4, 84, 84]
    assert stats.input_events.tolist() == [changed.sum()]
    per_axis = fan_in_axis(84, 8, 4, 20)  # Nature CNN conv1: 8x8 kernels, stride 4, 20x20 outputs, 32 channels
    assert stats.input_synaptic_ops.tolist() == [float((changed * np.outer(per_axis, per_axis) * 32).sum())]
    window_hit = [[changed[:, 4 * oy : 4 * oy + 8, 4 * ox : 4 * ox + 8].any() for ox in range(20)] for oy in range(20)]
    assert stats.neuron_updates[0].tolist() == [32 * np.sum(window_hit)]
    _, old = reference(snn, before)
    _, new = reference(snn, after)
    for layer, (q0, q1) in enumerate(zip(old, new)):
        change = (q1 - q0).flatten().long().tolist()
        assert stats.spikes[layer].tolist() == [sum(c != 0 for c in change)]
        assert stats.binary_spikes[layer].tolist() == [sum(bin(abs(c)).count("1") for c in change)]
    ops = sum(float(((q1 - q0) != 0).double().mul(fan.double()).sum())
              for q0, q1, fan in zip(old, new, snn.engine.counter.fan_outs))
    assert stats.synaptic_ops.tolist() == [ops]
    assert len(stats.neuron_updates) == len(snn.synapses)
    assert stats.neuron_updates[-1].tolist() == [snn.n_actions * bool(stats.spikes[-1].item())]


def test_vector_env_rows_keep_their_own_state_and_reset_alone(breakout):
    checkpoint, states = breakout
    snn = delta_snn(checkpoint, states[:50])
    snn.carry_state = True
    env_a, env_b = states[:12], states[100:112]
    for step in range(12):
        rows = [1, 0] if step % 2 else [0, 1]  # the order of the rows in a call does not matter
        obs = np.stack([env_a[step], env_b[step]])[rows]
        if step == 6:
            snn.reset_state([1])  # env 1's episode starts again: its next decision starts from a blank observation
        snn.act(obs, rows=rows)
        check_against_reference(snn, obs, rows)
        if step == 6:
            at_b = rows.index(1)
            assert snn.last_stats.input_events[at_b] == np.count_nonzero(env_b[step])
            assert snn.last_stats.input_events[1 - at_b] == np.count_nonzero(env_a[step] != env_a[step - 1])
    snn.act(states[200:201], rows=[3])  # a new env: fresh rows up to it
    assert snn._state[0].shape[0] == 4 and snn.last_stats.input_events[0] == np.count_nonzero(states[200])


def test_fresh_decisions_equal_carried_ones_and_start_from_a_blank_observation(breakout):
    checkpoint, states = breakout
    snn = delta_snn(checkpoint, states[:50])
    fresh = snn(states[:10])
    assert snn.last_stats.input_events.tolist() == np.count_nonzero(states[:10].reshape(10, -1), axis=1).tolist()
    snn.carry_state = True
    carried = torch.cat([snn(obs[None]) for obs in states[:10]])
    assert torch.equal(fresh, carried)
    with pytest.raises(ConfigError, match="carries state at the network's T = 8"):
        snn(states[:1], T=6)


def test_observations_of_fractions_refresh_the_first_stage_densely(mlp_checkpoint):
    torch.manual_seed(1)
    obs = torch.randn(20, 6)
    snn = convert(mlp_checkpoint, obs, coding="delta")
    snn.carry_state = True
    carried = torch.cat([snn(o[None]) for o in obs])
    assert snn.last_stats.input_events.tolist() == [6.0]  # every value is sent: fractions are not changes
    membranes, levels = reference(snn, obs.numpy())
    torch.testing.assert_close(carried, (membranes[-1] / L).float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("streams", [1, 3])
def test_the_compiled_bookkeeping_equals_the_tensor_operations(breakout, streams):
    checkpoint, states = breakout
    snn = delta_snn(checkpoint, states[:50])
    snn.carry_state = True
    runs = []
    for switch in (contextlib.nullcontext, fused_scan.switched_off):
        snn.reset_state()
        with switch():
            runs.append([])
            for i in range(30, 60):  # `streams` stretches of consecutive states, one row each
                q = snn(states[[i + 80 * k for k in range(streams)]])
                s = snn.last_stats
                runs[-1].append([q, *(v.clone() for v in snn._state), s.input_events, s.input_synaptic_ops, s.synaptic_ops, *s.spikes,
                                 *s.binary_spikes, *s.neuron_updates, *s.channel_spikes])
    for compiled, tensors in zip(*runs):
        assert all(torch.equal(a, b) for a, b in zip(compiled, tensors))


def test_a_delta_snn_is_saved_and_loaded_but_has_no_nir_form(breakout, tmp_path):
    checkpoint, states = breakout
    snn = delta_snn(checkpoint, states[:50])
    save_snn(snn, checkpoint, tmp_path / "snn")
    loaded, _ = load_snn(tmp_path / "snn")
    assert loaded.coding is DELTA and loaded.T == T and torch.equal(loaded(states[:5]), snn(states[:5]))
    with pytest.raises(NirError, match="delta spike coding cannot be written as NIR: its neurons keep their level"):
        to_nir(snn)


def test_the_games_player_carries_each_envs_state_and_resets_it_where_its_episode_starts(breakout):
    checkpoint, states = breakout
    snn = delta_snn(checkpoint, states[:50])
    player = _SnnPlayer(snn, T, "spikes+membrane")
    first, second = states[[10, 200]], states[[11, 201]]
    player.act_envs(first, np.array([0, 1]), np.array([True, True]))
    assert snn.last_stats.input_events.tolist() == np.count_nonzero(first.reshape(2, -1), axis=1).tolist()
    player.act_envs(second, np.array([0, 1]), np.array([False, True]))  # env 1's episode starts again
    assert snn.last_stats.input_events.tolist() == [np.count_nonzero(second[0] != first[0]), np.count_nonzero(second[1])]
    player.readouts(second)  # the recorder's call on the same states: no second simulation
    assert player.decisions == 4 and not snn.carry_state  # the network's own setting is left as it was
