"""benchmarks/delta_floor.py: its simulation of delta coding is the engine's (same actions, same events on
consecutive Breakout states), its variants send less, and its floors re-price the recorded cells."""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from dqn2snn_plugin import collect_observations, convert, load_dqn
from dqn2snn_plugin.errors import ResultsError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import delta_floor  # noqa: E402

T = 8


@pytest.fixture(scope="module")
def breakout():
    """The shipped Breakout DQN as a delta SNN, 200 consecutive states of its play in one env, and the fan-outs."""
    checkpoint = load_dqn(files("dqn2snn_plugin") / "data" / "BreakoutNoFrameskip-v4.qnet.pt")
    states = collect_observations(checkpoint, n_frames=200, n_envs=1, seed=5)
    snn = convert(checkpoint, states, percentile=99.99, channel_wise=True, coding="delta", T=T)
    stages = delta_floor.float64_stages(snn, T)
    return snn, states, stages, delta_floor.fan_outs(snn)


def test_the_first_variant_is_delta_coding_action_for_action_and_event_for_event(breakout):
    snn, states, stages, fans = breakout
    exact = delta_floor.variants(T, len(stages) - 1, 2)[0]
    actions, events = delta_floor.simulate(stages, snn.initial_membrane, torch.as_tensor(states, dtype=torch.float64),
                                           1, exact, fans)
    snn.carry_state = True
    engine_actions, into_first, into_the_rest = [], 0.0, 0.0
    for state in states:
        engine_actions.append(snn.act(state[None]))
        into_first += float(snn.last_stats.input_synaptic_ops.sum())
        into_the_rest += float(snn.last_stats.synaptic_ops.sum())
    assert torch.equal(actions, torch.cat(engine_actions))
    assert float(events[0]) * len(states) == into_first
    assert float(events[1:].sum()) * len(states) == pytest.approx(into_the_rest, rel=1e-12)


def test_fewer_bits_and_dead_zones_send_fewer_events_than_delta_coding(breakout):
    snn, states, stages, fans = breakout
    x = torch.as_tensor(states, dtype=torch.float64)
    exact, *others = delta_floor.variants(T, len(stages) - 1, 2)
    _, base = delta_floor.simulate(stages, snn.initial_membrane, x, 1, exact, fans)
    assert [v.name for v in others][:1] == ["spiking layer 3 at 7 bits"] and others[-1].theta == [8.0, 16.0, 16.0, 1.0]
    for variant in others:
        _, events = delta_floor.simulate(stages, snn.initial_membrane, x, 1, variant, fans)
        assert events[3] <= base[3], variant.name  # what conv3 sends fc1
        assert events[0] == base[0]  # the observation's changes are the same


def test_the_fan_outs_are_the_nature_cnns(breakout):
    _, _, stages, fans = breakout
    assert [tuple(f.shape) for f in fans] == [(4, 84, 84), (32, 20, 20), (64, 9, 9), (64, 7, 7), (512,)]
    assert float(fans[0][0, 40, 40]) == 32 * 2 * 2  # an inner pixel: 2 x 2 windows of stride 4, 32 channels
    assert float(fans[3].max()) == 512 and float(fans[4].max()) == 4  # conv3 into fc1, fc1 into Breakout's 4 actions


@pytest.mark.parametrize("argv", [["--states", "4"], ["--T", "30"], ["--bits-layer", "0"]])
def test_bad_options_are_one_line_and_exit_status_2(monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", ["delta_floor.py", *argv])
    with pytest.raises(SystemExit) as exit_:
        delta_floor.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("delta_floor.py: error: --states must be at least 8, --T 1 to 24")


def test_floors_reprice_the_recorded_whole_game_cells():
    cells = Path(__file__).resolve().parents[1] / "benchmarks" / "event_costs" / "atari_delta10" / "cells.jsonl"
    rows = delta_floor.floors(cells).splitlines()[2:]
    recorded = [json.loads(line) for line in cells.read_text().splitlines()]
    assert len(rows) == len(recorded) == 6
    for row, cell in zip(rows, recorded):
        cost = cell["snn"]["cost"]
        dqn = cost["dqn_int8"]["total"]["energy_pj"]
        fc1 = next(layer for layer in cost["snn"]["layers"] if layer["name"] == "linear 4")
        least = sum(layer["energy_pj"] - max(0.0, layer["weight_pj"] - d["weight_pj"])
                    for layer, d in zip(cost["snn"]["layers"], cost["dqn_int8"]["layers"]))
        assert row.strip(" |").split(" | ")[1:4] == [f"{cost['snn_over_dqn_int8']:.3f}", f"{fc1['energy_pj'] / dqn:.3f}",
                                          f"{least / dqn:.3f}"]
    assert delta_floor.floors(cells.parent / "missing.jsonl").count("\n") == 1  # the header only


@pytest.mark.parametrize("text", ["# not json\n", '{"kind": "cell"}\n', "[1, 2]\n"])
def test_floors_name_a_file_that_is_not_benchmark_cells(tmp_path, text):
    (tmp_path / "cells.jsonl").write_text(text)
    with pytest.raises(ResultsError, match=r"cells.jsonl line 1 is not a benchmark cell"):
        delta_floor.floors(tmp_path / "cells.jsonl")


def test_floors_refuse_cells_not_priced_in_int8(tmp_path):
    cell = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "event_costs" / "atari_delta10"
                       / "cells.jsonl").read_text().splitlines()[0])
    cell["snn"]["cost"]["snn"]["settings"]["precision"] = "fp32"
    (tmp_path / "cells.jsonl").write_text(json.dumps(cell) + "\n")
    with pytest.raises(ResultsError, match="need cells priced in int8"):
        delta_floor.floors(tmp_path / "cells.jsonl")
