"""Typed records: the JSON keys result files already hold read back and write out unchanged; damaged
records name the key; the weights' digest keeps the values earlier folders recorded."""

from __future__ import annotations

import copy

import pytest

from dqn2snn_plugin.energy import HOROWITZ_45NM
from dqn2snn_plugin.experiments.records import (
    BenchmarkCell, DqnBaseline, Evaluation, SnnPlay, StateDraw, SweepCell, weights_digest,
)
from dqn2snn_plugin.experiments.settings import RunSettings
from conftest import atari_checkpoint

SCORE = {"mean": 2.5, "std": 0.5, "scores": [2.0, 3.0], "lengths": [120, 131], "truncated": 0}
AGREEMENT = {"spikes+membrane": {"rate": 0.9, "rate_above_gap": 0.95, "spearman": 0.8, "n_states": 251},
             "spikes": {"rate": 0.7, "rate_above_gap": None, "spearman": None, "n_states": 251}}
SNN = {"score": SCORE, "agreement_snn_visited": AGREEMENT, "spikes_per_decision": 1234.5,
       "synaptic_ops_per_decision": 98765.0}


def _layer(name: str, compute_pj: float, weight_pj: float = 0.0, state_pj: float = 0.0) -> dict:
    return {"name": name, "neurons": 1, "macs": 0.0, "synaptic_events": 0.0, "neuron_updates": 0.0, "spikes": 0.0,
            "weight_bytes": 0.0, "state_bytes": 0.0, "compute_pj": compute_pj, "weight_pj": weight_pj,
            "state_pj": state_pj}


# a cost record as written by hand: SNN 1.5 + 0.5 + 0.5 = 2.5 µJ, int8 DQN 1.25 µJ, fp32 DQN 5 µJ
COST = {"snn": {"network": "SNN rate T=4 (fp32)", "layers": [_layer("linear 1", 1.5e6, 0.5e6, 0.5e6)],
                "settings": {"precision": "fp32", "weight_reads": "per_event", "decisions": 1234}},
        "dqn_int8": {"network": "DQN (int8)", "layers": [_layer("linear 1", 1.0e6, 0.25e6)], "settings": {}},
        "dqn_fp32": {"network": "DQN (fp32)", "layers": [_layer("linear 1", 4.0e6, 1.0e6)], "settings": {}},
        "table": {"name": "Horowitz 2014, 45 nm",
                  "constants": {"fp32_mult": 3.7, "fp32_add": 0.9, "int8_mult": 0.2, "int32_add": 0.1, "sram_8kb": 1.25,
                                "sram_32kb": 2.5, "sram_1mb": 12.5, "write_per_read": 1.0}}}
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


def test_a_cost_record_carries_energies_ratios_verdict_and_the_tables_constants_with_sources():
    written = SnnPlay.from_json({**SNN, "cost": COST}).to_json()
    cost = written["cost"]
    assert (cost["snn_energy_uj"], cost["dqn_int8_energy_uj"], cost["dqn_fp32_energy_uj"]) == pytest.approx((2.5, 1.25, 5))
    assert (cost["snn_over_dqn_int8"], cost["snn_over_dqn_fp32"], cost["cheaper_than_dqn_int8"]) == (2.0, 0.5, False)
    assert cost["verdict"] == "SNN rate T=4 (fp32) / DQN (int8) energy = 2: the SNN is not cheaper"
    assert cost["snn"]["total"]["energy_pj"] == pytest.approx(2.5e6) and cost["snn"]["layers"][0]["name"] == "linear 1"
    assert cost["table"]["constants"]["fp32_add"] == 0.9 and cost["table"]["constants"]["sram_1mb"] == 12.5
    assert set(cost["table"]["sources"]) == set(COST["table"]["constants"])
    assert "Horowitz" in cost["table"]["sources"]["int8_mult"] and "ISSCC 2014" in cost["table"]["sources"]["int8_mult"]
    assert SnnPlay.from_json(written).to_json() == written and SnnPlay.from_json(written).cost.table == HOROWITZ_45NM
    # records without costs (written before) read back without one and keep their form
    assert SnnPlay.from_json(SNN).cost is None and "cost" not in SnnPlay.from_json(SNN).to_json()
    cell = {**OLD_BENCHMARK_CELL, "snn": {**SNN, "cost": COST}}
    assert BenchmarkCell.from_json(cell).evaluation.snn.cost.ratio_int8 == 2.0


def test_a_damaged_cost_record_names_the_key():
    with pytest.raises(KeyError, match="dqn_int8"):
        SnnPlay.from_json({**SNN, "cost": {k: v for k, v in COST.items() if k != "dqn_int8"}})


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
