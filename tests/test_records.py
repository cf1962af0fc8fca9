"""Typed records: the JSON keys result files already hold read back and write out unchanged; damaged
records name the key; the weights' digest keeps the values earlier folders recorded."""

from __future__ import annotations

import copy

import pytest

from dqn2snn_plugin.experiments.records import (
    BenchmarkCell, DqnBaseline, Evaluation, StateDraw, SweepCell, weights_digest,
)
from dqn2snn_plugin.experiments.settings import RunSettings
from conftest import atari_checkpoint

SCORE = {"mean": 2.5, "std": 0.5, "scores": [2.0, 3.0], "lengths": [120, 131], "truncated": 0}
AGREEMENT = {"spikes+membrane": {"rate": 0.9, "rate_above_gap": 0.95, "spearman": 0.8, "n_states": 251},
             "spikes": {"rate": 0.7, "rate_above_gap": None, "spearman": None, "n_states": 251}}
SNN = {"score": SCORE, "agreement_snn_visited": AGREEMENT, "spikes_per_decision": 1234.5,
       "synaptic_ops_per_decision": 98765.0}
# a cells.jsonl line of `sweep` and one of `benchmark` as the code before these records wrote them
OLD_SWEEP_CELL = {"kind": "cell", "percentile": 99.9, "T": 8, **SNN, "agreement_heldout": AGREEMENT}
OLD_BENCHMARK_CELL = {
    "kind": "cell", "coding": "rate", "T": 4, "percentile": 99.9, "channel_wise": False,
    "checkpoint": "BreakoutNoFrameskip-v4.qnet.pt", "checkpoint_sha": "9a764d162614ebc560ccbbeb",
    "env_id": "BreakoutNoFrameskip-v4", "settings": RunSettings().as_config(), "dqn": {"score": SCORE}, "snn": SNN,
    "agreement_dqn_visited": AGREEMENT, "scales": {"percentile": 99.9, "hidden": [1.0, 2.0]},
    "host": "here", "ray_node_id": None, "wall_s": 12.5}


@pytest.mark.parametrize("record_type, line", [(SweepCell, OLD_SWEEP_CELL), (BenchmarkCell, OLD_BENCHMARK_CELL),
                                               (DqnBaseline, {"kind": "dqn", "score": SCORE})])
def test_lines_written_before_the_records_read_back_and_write_out_unchanged(record_type, line):
    assert record_type.from_json(line).to_json() == line


def test_an_evaluation_records_how_its_calibration_states_were_drawn():
    old = {k: v for k, v in OLD_BENCHMARK_CELL.items() if k not in ("kind", "coding", "channel_wise", "host",
                                                                     "ray_node_id", "wall_s")}
    assert Evaluation.from_json(old).calibration_states is None  # an evaluate result.json of before
    draw = StateDraw(5000, 1_000_003, 8, 0.05, separate=True)
    new = {**old, "calibration_states": draw.to_json()}
    assert Evaluation.from_json(new).calibration_states == draw and Evaluation.from_json(new).to_json() == new
    assert draw.to_json() == {"frames": 5000, "first_seed": 1_000_003, "n_envs": 8, "epsilon": 0.05,
                              "separate": True, "source": "the DQN's own epsilon-greedy play"}


@pytest.mark.parametrize("path, value, error", [
    (("snn",), None, "'snn'"), (("env_id",), None, "'env_id'"), (("snn", "score", "mean"), "high", "'mean'"),
    (("agreement_dqn_visited", "spikes"), None, "'spikes'"), (("wall_s",), True, "'wall_s'")])
def test_a_damaged_record_names_the_key(path, value, error):
    line = copy.deepcopy(OLD_BENCHMARK_CELL)
    *parents, last = path
    target = line
    for key in parents:
        target = target[key]
    if value is None and path != ("env_id",):
        del target[last]
    else:
        target[last] = value
    with pytest.raises((KeyError, TypeError), match=error):
        BenchmarkCell.from_json(line)


def test_weights_digest_keeps_the_values_earlier_folders_recorded():
    # the value `evaluation.checkpoint_digest` gave at commit 0ed19b0, as folders made then hold it
    assert weights_digest(atari_checkpoint()) == "9a764d162614ebc560ccbbeb"


# ---------------------------------------------------------------- numbers from the right field


def test_a_score_summary_is_counted_from_its_episodes():
    from dqn2snn_plugin.envs.play import EpisodeResult
    from dqn2snn_plugin.experiments.records import ScoreSummary

    episodes = [EpisodeResult(1.0, 30, False), EpisodeResult(4.0, 70, True), EpisodeResult(7.0, 50, True)]
    summary = ScoreSummary.of(episodes)  # mean 4, population variance (9 + 0 + 9) / 3 = 6
    assert (summary.mean, summary.std) == (4.0, pytest.approx(6 ** 0.5))
    assert (summary.scores, summary.lengths, summary.truncated) == ([1.0, 4.0, 7.0], [30, 70, 50], 2)


def test_an_agreement_keeps_each_measured_number_in_its_field():
    import torch
    from dqn2snn_plugin.experiments.records import Agreement
    from dqn2snn_plugin.metrics import AgreementResult

    actions = torch.zeros(7, dtype=torch.int64)
    result = AgreementResult(actions, actions, torch.zeros(7, 2), torch.zeros(7, 2), torch.zeros(7), rate=0.25,
                             rate_above_gap=0.5, n_above_gap=3, spearman=0.75)
    assert Agreement.of(result) == Agreement(rate=0.25, rate_above_gap=0.5, spearman=0.75, n_states=7)
    nan = float("nan")
    empty = AgreementResult(actions, actions, torch.zeros(7, 2), torch.zeros(7, 2), torch.zeros(7), rate=0.25,
                            rate_above_gap=nan, n_above_gap=0, spearman=nan)
    assert Agreement.of(empty) == Agreement(rate=0.25, rate_above_gap=None, spearman=None, n_states=7)


def test_records_with_a_different_number_in_every_field_read_back_equal():
    import json
    from distinct_records import BENCHMARK_CELL, EVALUATION, SWEEP_CELL

    line = json.loads(json.dumps(EVALUATION.to_json()))
    assert line["agreement_dqn_visited"]["spikes+membrane"]["rate"] == 0.433
    assert line["snn"]["agreement_snn_visited"]["spikes+membrane"]["rate"] == 0.811
    assert (line["dqn"]["score"]["mean"], line["snn"]["score"]["mean"]) == (12.0, 5.0)
    assert Evaluation.from_json(line) == EVALUATION
    assert BenchmarkCell.from_json(json.loads(json.dumps(BENCHMARK_CELL.to_json()))) == BENCHMARK_CELL
    line = json.loads(json.dumps(SWEEP_CELL.to_json()))
    assert (line["agreement_heldout"]["spikes"]["rate"], line["agreement_snn_visited"]["spikes"]["rate"]) == (
        0.166, 0.622)
    assert SweepCell.from_json(line) == SWEEP_CELL
