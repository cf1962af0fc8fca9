"""The cost model on tiny networks whose spikes, events and MACs are counted by hand in each test."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

import dqn2snn_plugin as d2s
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.coding import RateCoding
from dqn2snn_plugin.costs import (
    HOROWITZ_45NM, CostMeter, CostReport, EnergyTable, compare_with_dqn, dqn_cost, snn_cost, verdict,
)
from dqn2snn_plugin.engine.stats import SimulationStats
from dqn2snn_plugin.errors import ConfigError

FP32_ADD, SRAM_8KB = 0.9, 10 / 8  # Horowitz 2014: pJ per fp32 add, pJ per byte of an 8 KB SRAM


def _checkpoint(net: nn.Sequential, shape: tuple[int, ...]) -> DQNCheckpoint:
    return DQNCheckpoint(net.eval(), net[-1].out_features, shape, "MlpPolicy", "DQN", None, None, "<test>")


def _set(layer: nn.Module, weight) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(layer.weight.shape))
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


@pytest.fixture
def mlp() -> DQNCheckpoint:
    """2 -> 3 -> 2: on x = [1, 0] the hidden activations are [1, 0.5, 0]."""
    net = nn.Sequential(_set(nn.Linear(2, 3), [[1, 0], [0.5, 0], [0, 1]]), nn.ReLU(), _set(nn.Linear(3, 2), torch.ones(2, 3)))
    return _checkpoint(net, (2,))


@pytest.fixture
def convnet() -> DQNCheckpoint:
    """4x4 -> conv 2x2 -> 3x3 -> conv 2x2 -> 2x2 -> linear -> 1, all weights one."""
    net = nn.Sequential(_set(nn.Conv2d(1, 1, 2), torch.ones(4)), nn.ReLU(), _set(nn.Conv2d(1, 1, 2), torch.ones(4)),
                        nn.ReLU(), nn.Flatten(), _set(nn.Linear(4, 1), torch.ones(4)))
    return _checkpoint(net, (1, 4, 4))


def test_mlp_rate_counts_and_energy_by_hand(mlp):
    x = torch.tensor([[1.0, 0.0]])
    snn = d2s.convert(mlp, x, percentile="max")
    report = snn_cost(snn, x, T=4)
    first, second = report.layers
    # binary input: one input spike, fan-out 3, no MACs; 3 neurons x 4 steps
    assert (first.spikes, first.synaptic_events, first.macs, first.neuron_updates) == (1, 3, 0, 12)
    # hidden rates 1, 0.5, 0 over 4 steps: 4 + 2 + 0 spikes, each to 2 outputs; 2 neurons x 4 steps
    assert (second.spikes, second.synaptic_events, second.neuron_updates) == (6, 12, 8)
    assert (first.weight_bytes, second.weight_bytes) == (3 * 4, 12 * 4)  # one fp32 weight per event
    assert (first.state_bytes, second.state_bytes) == (12 * 8, 8 * 8)  # membrane read + write per update
    compute = (3 + 12 + 12 + 8) * FP32_ADD
    memory = (12 + 48 + 96 + 64) * SRAM_8KB
    assert report.energy_pj == pytest.approx(compute + memory)


def test_mlp_dense_first_layer_counts_macs(mlp):
    x = torch.tensor([[1.0, 0.5]])
    report = snn_cost(d2s.convert(mlp, x, percentile="max"), x, T=4)
    assert (report.layers[0].macs, report.layers[0].synaptic_events) == (6, 0)
    assert report.layers[0].weight_bytes == 6 * 4  # a dense pass reads each weight once
    assert report.layers[0].state_bytes == 3 * 4 * 8 + 2 * 4  # membranes; the observation read once, as the DQN does
    assert report.settings["first_stage"] == "dense"


def test_mlp_binary_coding_updates_twice_per_hidden_layer(mlp):
    x = torch.tensor([[1.0, 0.0]])
    report = snn_cost(d2s.convert(mlp, x, percentile="max", coding="binary", T=4), x)
    first, second = report.layers
    assert (first.neuron_updates, second.neuron_updates) == (3 * 2 * 4, 2 * 4)  # integrate + fire; integrate
    # 15 levels, round to nearest: 1 -> 1111 (4 spikes), 0.5 -> 7.5 + 0.5 = 8 -> 1000 (1 spike), 0 -> none
    assert (second.spikes, second.synaptic_events) == (5, 10)


def test_conv_events_follow_each_neurons_fan_out(convnet):
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0  # an inner pixel: in all four windows of the first conv
    report = snn_cost(d2s.convert(convnet, x, percentile="max"), x, T=4)
    first, second, third = report.layers
    assert (first.spikes, first.synaptic_events) == (1, 4)
    # hidden 1: ones at (0,0) (0,1) (1,0) (1,1), 4 spikes each; fan-outs into the 2x2 conv: 1, 2, 2, 4
    assert (second.spikes, second.synaptic_events) == (16, 4 * (1 + 2 + 2 + 4))
    # hidden 2: sums 4, 2, 2, 1 scaled by the max 4: rates 1, .5, .5, .25 -> 4 + 2 + 2 + 1 spikes, fan-out 1
    assert (third.spikes, third.synaptic_events) == (9, 9)
    assert [c.neurons for c in report.layers] == [9, 4, 1]


def test_dqn_int8_by_hand(convnet):
    report = dqn_cost(convnet, "int8")
    assert [c.macs for c in report.layers] == [9 * 4, 4 * 4, 4]
    assert [c.weight_bytes for c in report.layers] == [4, 4, 4]
    assert [c.state_bytes for c in report.layers] == [16 + 9, 9 + 4, 4 + 1]  # int8 activations in and out
    mac = 0.2 + 0.1  # int8 multiply + int32 add
    assert report.energy_pj == pytest.approx((36 + 16 + 4) * mac + (12 + 25 + 13 + 5) * SRAM_8KB)
    assert dqn_cost(convnet, "fp32").layers[0].compute_pj == pytest.approx(36 * (3.7 + 0.9))


def test_a_swapped_table_reprices_proportionally(mlp):
    x = torch.tensor([[1.0, 0.0]])
    snn = d2s.convert(mlp, x, percentile="max")
    base = snn_cost(snn, x, T=4)
    assert snn_cost(snn, x, T=4, table=HOROWITZ_45NM.scaled(3)).energy_pj == pytest.approx(3 * base.energy_pj)
    dearer_adds = snn_cost(snn, x, T=4, table=replace(HOROWITZ_45NM, fp32_add=2 * FP32_ADD))
    assert dearer_adds.total.compute_pj == pytest.approx(2 * base.total.compute_pj)
    assert dearer_adds.total.weight_pj == pytest.approx(base.total.weight_pj)


def test_weights_read_once_per_decision(mlp):
    x = torch.tensor([[1.0, 0.0]])
    report = snn_cost(d2s.convert(mlp, x, percentile="max"), x, T=4, weight_reads="per_decision")
    assert [c.weight_bytes for c in report.layers] == [6 * 4, 6 * 4]


def test_least_weight_reads_take_the_lesser_of_per_event_and_per_decision_stage_by_stage(mlp):
    x = torch.tensor([[1.0, 0.0]])
    snn = d2s.convert(mlp, x, percentile="max")
    # per event the stages read 3 and 12 one-byte weights, per decision 6 and 6: the first stage keeps 3
    least = snn_cost(snn, x, T=4, precision="int8", weight_reads="least")
    assert [c.weight_bytes for c in least.layers] == [3, 6]
    per_event = snn_cost(snn, x, T=4, precision="int8")
    assert least.layers[1].weight_pj == pytest.approx(per_event.layers[1].weight_pj / 2)
    assert least.settings["weight_reads"] == "least"


def test_int8_snn_reads_one_byte_weights_and_32_bit_membranes(mlp):
    x = torch.tensor([[1.0, 0.0]])
    report = snn_cost(d2s.convert(mlp, x, percentile="max"), x, T=4, precision="int8")
    assert [c.weight_bytes for c in report.layers] == [3, 12]
    assert report.total.compute_pj == pytest.approx((3 + 12 + 12 + 8) * 0.1)


def test_sram_energy_grows_with_the_array():
    table = EnergyTable()
    assert [table.sram(n) for n in (8 << 10, 32 << 10, 1 << 20, 1 << 30)] == [1.25, 2.5, 12.5, 12.5]
    assert set(EnergyTable.sources()) >= {"fp32_add", "fp32_mult", "int8_mult", "int32_add", "sram_8kb"}


def test_report_json_markdown_and_verdict(mlp):
    x = torch.tensor([[1.0, 0.0]])
    snn_report = snn_cost(d2s.convert(mlp, x, percentile="max"), x, T=4)
    written = json.loads(json.dumps(snn_report.to_json()))
    assert written["total"]["name"] == "total" and written["total"]["energy_pj"] == pytest.approx(snn_report.energy_pj)
    assert CostReport.from_json(written).to_json() == written
    assert snn_report.markdown().count("\n| ") == 4  # header, two layers, total
    dqn = dqn_cost(mlp, "int8")
    ratio = snn_report.energy_pj / dqn.energy_pj
    assert verdict(snn_report, dqn).endswith(f"= {ratio:.3g}: the SNN is {'cheaper' if ratio < 1 else 'not cheaper'}")


@pytest.mark.parametrize("kwargs", [{"precision": "fp16"}, {"weight_reads": "never"}])
def test_bad_settings_are_named(mlp, kwargs):
    x = torch.tensor([[1.0, 0.0]])
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        snn_cost(d2s.convert(mlp, x, percentile="max"), x, T=4, **kwargs)


def test_a_meter_prices_the_mean_of_the_batches_it_was_given(mlp):
    binary, analog = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.5]])
    snn = d2s.convert(mlp, binary, percentile="max", T=4)  # hidden scale 1: rates = activations
    meter = CostMeter(snn)
    for x in (binary, analog):
        snn.readouts(x)
        meter.add(snn.last_stats, x)
    first, second = meter.report().layers
    # binary: 1 input spike to 3 synapses; analog: one dense pass of 2 x 3 MACs reading the 6 weights once
    assert (first.spikes, first.synaptic_events, first.macs) == (0.5, 1.5, 3)
    assert first.weight_bytes == (1.5 + 6 / 2) * 4
    # hidden [1, .5, 0] -> 4 + 2 + 0 spikes; [1, .5, .5] -> 4 + 2 + 2; each to 2 outputs
    assert (second.spikes, second.synaptic_events) == ((6 + 8) / 2, (12 + 16) / 2)
    assert (first.neuron_updates, second.neuron_updates) == (3 * 4, 2 * 4)
    assert meter.report().settings["first_stage"] == "dense on 50.0% of decisions"
    assert meter.report().settings["decisions"] == 2


class GradedRate(RateCoding):
    """A rate coding whose events carry a multi-bit payload, as delta coding's do."""

    name = "graded-test"
    graded_events = True


def _graded_stats() -> SimulationStats:
    """What a graded coding's simulation reports for one decision of the 2 -> 3 -> 2 network: 1 changed
    input (3 synapses), 2 graded events from the hidden layer (2 synapses each), 3 and 2 neurons updated."""
    return SimulationStats(1, spikes=[torch.tensor([2.0])], neurons=[3], synaptic_ops=torch.tensor([4.0]),
                           input_events=torch.tensor([1.0]), input_synaptic_ops=torch.tensor([3.0]),
                           neuron_updates=[torch.tensor([3.0]), torch.tensor([2.0])])


def test_graded_events_are_priced_as_macs_with_the_neurons_last_level(mlp):
    x = torch.tensor([[1.0, 0.5]])  # analog, but the simulation's own input events are taken
    snn = d2s.convert(mlp, x, percentile="max")
    snn.coding = GradedRate()
    report = snn_cost(snn, x, stats=_graded_stats())
    first, second = report.layers
    assert (first.macs, first.spikes, first.synaptic_events, first.neuron_updates) == (0, 1, 3, 3)
    assert (second.spikes, second.synaptic_events, second.neuron_updates) == (2, 4, 2)
    # fp32: a MAC (4.6 pJ) per event, an add per update; a membrane and a last level (4 + 4 bytes) read and written
    assert first.state_bytes == 3 * 2 * 8 and second.state_bytes == 2 * 2 * 8
    assert report.energy_pj == pytest.approx((3 + 4) * 4.6 + (3 + 2) * 0.9 + (3 + 4) * 4 * SRAM_8KB
                                             + (48 + 32) * SRAM_8KB)
    int8 = snn_cost(snn, x, stats=_graded_stats(), precision="int8")
    # int8: 0.3 pJ per MAC, 0.1 per update, 1-byte weights, 32-bit membrane + 8-bit level
    assert int8.energy_pj == pytest.approx((3 + 4) * 0.3 + (3 + 2) * 0.1 + (3 + 4) * SRAM_8KB + (3 + 2) * 2 * 5 * SRAM_8KB)
    assert int8.settings["synaptic_event"] == "mac" and int8.settings["neuron_steps"] == "counted by the simulation"


def test_without_spikes_per_channel_a_layer_takes_its_mean_fan_out(mlp):
    x = torch.tensor([[1.0, 0.0]])
    snn = d2s.convert(mlp, x, percentile="max")
    stats = replace(_graded_stats(), channel_spikes=[])  # fully connected: every hidden neuron reaches 2 outputs
    assert snn_cost(snn, x, stats=stats).layers[1].synaptic_events == 4


def test_a_comparison_with_the_dqn_holds_both_precisions_and_the_table(mlp):
    x = torch.tensor([[1.0, 0.0]])
    report = snn_cost(d2s.convert(mlp, x, percentile="max"), x, T=4)
    table = HOROWITZ_45NM.scaled(2)
    comparison = compare_with_dqn(report, mlp, table)
    # the DQN: 6 + 6 MACs, 12 weights, activations 2 + 3 in, 3 + 2 out; all in 8 KB arrays (x 2: the table)
    assert comparison.dqn_int8.energy_pj == pytest.approx(2 * (12 * 0.3 + (12 + 10) * SRAM_8KB))
    assert comparison.dqn_fp32.energy_pj == pytest.approx(2 * (12 * 4.6 + (12 + 10) * 4 * SRAM_8KB))
    assert comparison.ratio_int8 == pytest.approx(report.energy_pj / comparison.dqn_int8.energy_pj)
    assert comparison.table.name == "Horowitz 2014, 45 nm x 2" and comparison.cheaper == (comparison.ratio_int8 < 1)


def test_an_empty_meter_is_refused(mlp):
    with pytest.raises(ConfigError, match="no decision"):
        CostMeter(d2s.convert(mlp, torch.tensor([[1.0, 0.0]]), percentile="max")).report()
