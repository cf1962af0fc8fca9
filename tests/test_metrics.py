"""Agreement metric: hand-made cases with known answers, plus the play hook on real Atari states."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from dqn2snn_plugin.envs.atari import play
from dqn2snn_plugin.errors import CalibrationError, ConfigError
from dqn2snn_plugin.metrics import AgreementRecorder, AgreementResult, agreement, spearman_per_state

from conftest import atari_checkpoint, tiny_checkpoint


class TableSNN:
    """Stand-in SNN whose readout for observation row i is `values[i]` (looked up by obs[:, 0])."""

    def __init__(self, values: list[list[float]]) -> None:
        self.values = torch.tensor(values)
        self.calls: list[dict] = []

    def __call__(self, obs, T, readout=None):
        self.calls.append({"T": T, "readout": readout, "n": len(obs)})
        return self.values[torch.as_tensor(obs)[:, 0].long()]


def identity_dqn(q_rows: list[list[float]]):
    """A DQN whose Q-values on observation [i, *q_rows[i]] are q_rows[i] (the index column gets weight 0)."""
    n_actions = len(q_rows[0])
    weight = torch.cat([torch.zeros(n_actions, 1), torch.eye(n_actions)], dim=1)
    obs = torch.tensor([[i, *row] for i, row in enumerate(q_rows)], dtype=torch.float32)
    return tiny_checkpoint(weight), obs


def test_known_actions_give_known_rate_with_per_state_detail():
    dqn, obs = identity_dqn([[3, 1, 0], [0, 2, 1], [1, 0, 5], [0, 0, 4]])
    snn = TableSNN([[9, 1, 0], [0, 7, 1], [5, 0, 1], [0, 1, 0]])
    result = agreement(dqn, snn, obs, T=8, readout="spikes")
    assert result.dqn_actions.tolist() == [0, 1, 2, 2]
    assert result.snn_actions.tolist() == [0, 1, 0, 1]
    assert result.rate == pytest.approx(0.5)
    assert result.q_gaps.tolist() == pytest.approx([2, 1, 4, 4])
    assert torch.equal(result.snn_values, snn.values)
    assert {(c["T"], c["readout"]) for c in snn.calls} == {(8, "spikes")}


def test_ties_go_to_the_lowest_action_index_on_both_sides():
    dqn, obs = identity_dqn([[1, 2, 2], [4, 4, 0]])  # DQN picks 1, then 0
    snn = TableSNN([[0, 3, 3], [3, 0, 3]])  # SNN picks 1, then 0
    result = agreement(dqn, snn, obs, T=1)
    assert result.dqn_actions.tolist() == [1, 0]
    assert result.snn_actions.tolist() == [1, 0]
    assert result.rate == 1.0


def test_gap_filters_absolute_and_relative():
    # gaps 0.1, 3, 5 (relative to |max Q|: 0.01, 0.3, 0.5); the SNN is wrong only on the first two.
    dqn, obs = identity_dqn([[10, 9.9, 0], [10, 7, 0], [-5, -10, -20]])
    snn = TableSNN([[0, 1, 0], [0, 1, 0], [1, 0, 0]])
    assert agreement(dqn, snn, obs, T=4).rate == pytest.approx(1 / 3)
    absolute = agreement(dqn, snn, obs, T=4, gap_threshold=1.0)
    assert (absolute.n_above_gap, absolute.rate_above_gap) == (2, pytest.approx(0.5))
    relative = agreement(dqn, snn, obs, T=4, relative_gap_threshold=0.4)
    assert (relative.n_above_gap, relative.rate_above_gap) == (1, 1.0)
    none_left = agreement(dqn, snn, obs, T=4, gap_threshold=100.0)
    assert none_left.n_above_gap == 0 and math.isnan(none_left.rate_above_gap)


def test_relative_gap_filter_is_relative_to_the_size_of_q_for_a_losing_agent():
    """All Q-values negative (an agent that expects to lose): the threshold is r * |max Q|, not r * max Q."""
    rows = [[-10, -10.05, -30], [-10, -13, -30], [10, 9.95, -30], [10, 7, -30]]  # gaps 0.05, 3, 0.05, 3
    dqn, obs = identity_dqn(rows)
    snn = TableSNN([[0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]])  # wrong on both small-gap states
    result = agreement(dqn, snn, obs, T=4, relative_gap_threshold=0.01)  # keeps gaps above 0.1
    assert (result.n_above_gap, result.rate_above_gap, result.rate) == (2, 1.0, 0.5)


def test_gap_filters_keep_only_gaps_strictly_above_the_threshold():
    # gaps exactly at each threshold (exact in binary floating point) are left out; just above, kept
    dqn, obs = identity_dqn([[1.0, 0.5], [1.0, 0.25], [-2.0, -3.0], [4.0, 1.5]])  # gaps .5, .75, 1, 2.5
    snn = TableSNN([[1, 0], [1, 0], [0, 1], [1, 0]])
    absolute = AgreementResult.from_values(dqn.q_values(obs), snn(obs, T=1), gap_threshold=0.5)
    assert absolute.n_above_gap == 3 and absolute.rate_above_gap == pytest.approx(2 / 3)
    # relative: gap > 0.5 * |max Q|, i.e. > 0.5, 0.5, 1.0, 2.0
    relative = AgreementResult.from_values(dqn.q_values(obs), snn(obs, T=1), relative_gap_threshold=0.5)
    assert relative.n_above_gap == 2 and relative.rate_above_gap == 1.0
    ties = AgreementResult.from_values(torch.tensor([[1.0, 1.0], [2.0, 1.0]]), torch.tensor([[0.0, 1.0]] * 2),
                                       gap_threshold=0.0)
    assert ties.n_above_gap == 1 and ties.rate_above_gap == 0.0  # a tie has no preference to lose


def test_spearman_on_known_permutations_and_ties():
    q = torch.tensor([[1.0, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 2, 4], [5, 5, 5, 5]])
    s = torch.tensor([[10.0, 20, 30, 40], [4, 3, 2, 1], [1, 3, 2, 4], [1, 1, 3, 2], [1, 2, 3, 4]])
    rho = spearman_per_state(q, s)
    assert rho[:3].tolist() == pytest.approx([1.0, -1.0, 0.8])  # 1 - 6*2/(4*15) for one swap
    assert rho[3].item() == pytest.approx(spearmanr(q[3], s[3]).statistic)
    assert math.isnan(rho[4].item())  # constant Q row has no rank correlation
    result = AgreementResult.from_values(q, s)
    assert result.spearman == pytest.approx(np.mean(rho[:4].tolist()))


def test_batching_does_not_change_the_result():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(37, 5)).tolist()
    dqn, obs = identity_dqn(rows)
    snn = TableSNN((np.array(rows) + rng.normal(scale=0.5, size=(37, 5))).tolist())
    small, large = agreement(dqn, snn, obs, T=2, batch_size=4), agreement(dqn, snn, obs, T=2)
    assert max(c["n"] for c in snn.calls) == 37
    assert torch.equal(small.snn_actions, large.snn_actions) and small.rate == large.rate
    assert 0 < large.rate < 1


def test_bad_inputs_raise_named_errors():
    dqn, obs = identity_dqn([[1, 0], [0, 1]])
    snn = TableSNN([[1, 0], [0, 1]])
    with pytest.raises(ConfigError):
        agreement(dqn, snn, obs, T=0)
    with pytest.raises(CalibrationError, match=r"\(2, 5\)"):
        agreement(dqn, snn, torch.zeros(2, 5), T=4)
    with pytest.raises(CalibrationError, match="empty"):
        agreement(dqn, snn, [], T=4)


class MultiReadoutSNN:
    """Stand-in SNN with `readouts()`: one simulation gives every readout; counts simulations."""

    def __init__(self, dqn) -> None:
        self.dqn, self.simulations = dqn, 0

    def readouts(self, obs, T):
        self.simulations += 1
        q = self.dqn.q_values(obs)
        flipped = q.clone()
        flipped[:, [0, 1]] = flipped[:, [1, 0]]  # a readout that swaps the first two actions
        return {"spikes+membrane": q, "spikes": flipped, "membrane": q}

    def __call__(self, obs, T, readout="spikes+membrane"):
        return self.readouts(obs, T)[readout]


def test_recorder_on_dqn_visited_atari_states():
    dqn = atari_checkpoint("BreakoutNoFrameskip-v4")
    snn = MultiReadoutSNN(dqn)
    recorder = AgreementRecorder(dqn, snn, T=16, readouts=["spikes+membrane", "spikes"])
    episodes = play(dqn.act, dqn.env_id, 3, n_envs=2, max_steps=25, seed=0, on_step=recorder)
    assert recorder.n_states == sum(e.length for e in episodes) == 75
    assert snn.simulations == 25 + 25  # one per vectorised step, both readouts from it
    results = recorder.results()
    assert set(results) == {"spikes+membrane", "spikes"}
    assert results["spikes+membrane"].rate == 1.0
    expected = (results["spikes"].dqn_actions > 1).double().mean().item()
    assert results["spikes"].rate == pytest.approx(expected)  # agrees only where the DQN picks 2 or 3


def test_recorder_without_readouts_method_calls_per_readout():
    dqn, obs = identity_dqn([[1, 0, 0], [0, 0, 1]])
    snn = TableSNN([[1, 0, 0], [1, 0, 0]])
    recorder = AgreementRecorder(dqn, snn, T=3, readouts=["spikes", "membrane"])
    with pytest.raises(ConfigError):
        recorder.results()
    recorder(obs.numpy(), np.zeros(2), np.zeros(2))
    assert [c["readout"] for c in snn.calls] == ["spikes", "membrane"]
    assert {name: r.rate for name, r in recorder.results().items()} == {"spikes": 0.5, "membrane": 0.5}
    with pytest.raises(ConfigError, match="nope"):
        AgreementRecorder(dqn, MultiReadoutSNN(dqn), T=3, readouts=["nope"])(obs.numpy(), None, None)
