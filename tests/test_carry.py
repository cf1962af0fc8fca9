"""Residual carry (CRPI): two consecutive decisions against an IF loop written out with the official
code's update, the option's checks, its save/load round trip, its record in results, and `evaluate`
running with it."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from dqn2snn_plugin import convert
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.errors import ConfigError
from dqn2snn_plugin.experiments import settings as st
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.io.store import load_snn, save_snn
from dqn2snn_plugin.network import ResidualCarry


def mlp() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3)).eval()


@torch.no_grad()
def reference_decisions(snn, observations, T, alpha, clip, v0, fires):
    """Consecutive decisions of one IF loop per layer, written from CRPI's `SpikingNeuron` (official code,
    github.com/xuzijie32/ANN2SNN-CRPI, MuJoCo/convert.py): the membrane starts at v0 + init, and after the
    decision init = clamp(alpha * clamp(mem - start, min=-fire), -clip, clip). Returns, per decision, the
    spike totals per layer and sample and the readouts; the last inits; whether the bound -fire acted."""
    stages = list(snn.synapses)
    n_layers = len(stages)  # hidden layers and the output neurons
    inits = [0.0] * n_layers
    decisions, bounded = [], False
    for x in observations:
        starts, v, fired = [None] * n_layers, [None] * n_layers, [0.0] * n_layers
        summed_q = 0.0
        for _ in range(T):
            signal = x
            for layer, stage in enumerate(stages):
                current = stage(signal)
                if layer == n_layers - 1:
                    summed_q = summed_q + current
                    current = current / snn.scales.output
                if v[layer] is None:
                    starts[layer] = v0 + torch.as_tensor(inits[layer], dtype=current.dtype) + torch.zeros_like(current)
                    v[layer] = starts[layer].clone()
                v[layer] = v[layer] + current
                spikes = fires(v[layer]).to(current.dtype)
                v[layer] = v[layer] - spikes
                fired[layer] = fired[layer] + spikes
                signal = spikes
        out = n_layers - 1
        decisions.append({
            "spikes_per_layer": [f.sum(1) for f in fired[:out]],
            "spikes": fired[out] * snn.scales.output / T,
            "spikes+membrane": (fired[out] + v[out] - starts[out]) * snn.scales.output / T,
            "membrane": summed_q / T,
        })
        for layer in range(n_layers):
            residual = torch.maximum(v[layer] - starts[layer], -fired[layer])
            bounded = bounded or bool((v[layer] - starts[layer] < -fired[layer] - 1e-3).any())
            inits[layer] = (alpha * residual).clamp(-clip, clip)
    return decisions, inits, bounded


@pytest.mark.parametrize("backend, fires", [("spikingjelly", lambda v: v >= 1.0), ("snntorch", lambda v: v > 1.0)],
                         ids=["spikingjelly", "snntorch"])
def test_two_consecutive_decisions_equal_a_written_out_if_loop_with_the_crpi_start(backend, fires):
    net = mlp()
    carry = ResidualCarry(0.7, 0.2)
    snn = convert(net, torch.randn(400, 5), percentile=99.0, backend=backend, residual_carry=carry).double()
    assert snn.carry_state and snn.initial_membrane == 0.5  # CRPI's half-threshold base by default
    snn.options.block_samples = 3 * 16  # 3 time steps per block: blocks must chain across the carry
    snn.options.max_elements = 3 * 39 * 5  # steps per block x neurons per sample x 5: chunks of 5 samples
    observations = [torch.randn(16, 5, dtype=torch.float64) for _ in range(3)]
    T = 10
    got = []
    for x in observations:
        got.append((snn.readouts(x, T), [s.clone() for s in snn.last_stats.spikes]))
    expected, inits, bounded = reference_decisions(snn, observations, T, carry.scale, carry.clip, 0.5, fires)
    for decision, ((readouts, spikes), want) in enumerate(zip(got, expected)):
        for layer, total in enumerate(want["spikes_per_layer"]):
            assert spikes[layer].tolist() == total.tolist(), f"decision {decision}, layer {layer}"
        for name in ("spikes", "spikes+membrane", "membrane"):
            torch.testing.assert_close(readouts[name], want[name], rtol=0, atol=1e-9, msg=f"{decision} {name}")
    # the carried starts are the reference's, and the test reaches every branch of the update
    for carried, init in zip(snn._state, inits):
        torch.testing.assert_close(carried, 0.5 + init, rtol=0, atol=1e-9)
    shifts = torch.cat([s.flatten() for s in snn._state]) - 0.5
    clipped = (shifts.abs() - carry.clip).abs() < 1e-12
    assert (clipped & (shifts > 0)).any() and (clipped & (shifts < 0)).any()  # clipped both ways
    assert ((shifts.abs() > 1e-3) & ~clipped).any() and bounded  # scaled, not clipped; the -N bound acted
    fresh = convert(net, torch.randn(400, 5), percentile=99.0, backend=backend, initial_membrane="half").double()
    assert not torch.equal(fresh.readouts(observations[1], T)["spikes"], got[1][0]["spikes"])  # the carry shows


def test_scale_zero_is_a_fresh_half_threshold_start_and_raw_carry_is_unchanged():
    net, calibration = mlp(), torch.randn(400, 5)
    observations = [torch.randn(8, 5) for _ in range(3)]
    zero = convert(net, calibration, residual_carry="0")
    half = convert(net, calibration, initial_membrane="half")
    for x in observations:
        torch.testing.assert_close(zero.readouts(x, 12), half.readouts(x, 12), rtol=0, atol=0)
    raw = convert(net, calibration)
    raw.carry_state = True  # no residual carry: the final membranes are the next start, as before
    raw.readouts(observations[0], 12)
    ends = [v.clone() for v in raw._state]
    stepped = convert(net, calibration)
    stepped.carry_state = True
    stepped.readouts(observations[0], 7)
    stepped.readouts(observations[0], 5)  # 7 + 5 steps of the same observation: the same 12-step membranes
    for v, w in zip(ends, stepped._state):
        torch.testing.assert_close(v, w)


@pytest.mark.parametrize("args, message", [
    ((float("nan"),), "scale must be a number in \\[0, 1\\]"), ((-0.1,), "scale"), ((1.5,), "scale"),
    ((True,), "scale"), (("0.5",), "scale"), ((0.5, 0.0), "clip must be a number in \\(0, 1\\]"),
    ((0.5, 2.0), "clip"), ((0.5, float("inf")), "clip")])
def test_bad_scales_and_clips_are_refused_in_one_line(args, message):
    with pytest.raises(ConfigError, match=message) as error:
        ResidualCarry(*args)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text", ["", "a", "0.5,", "0.5,0.5,0.5", "nan", "2"])
def test_bad_texts_are_refused_by_the_flag(text):
    parser = argparse.ArgumentParser(exit_on_error=False)
    st.add_options(parser)
    with pytest.raises(argparse.ArgumentError, match="residual carry"):
        parser.parse_args(["--residual-carry", text])


def test_the_flag_is_parsed_recorded_and_read_back():
    parser = argparse.ArgumentParser(exit_on_error=False)
    st.add_options(parser)
    run = st.from_args(parser.parse_args(["--residual-carry", "0.2"]))
    assert run.residual_carry == ResidualCarry(0.2, 0.5)
    assert run.as_config()["residual_carry"] == "0.2,0.5"
    assert ResidualCarry.parse(run.as_config()["residual_carry"]) == run.residual_carry
    assert "residual_carry" not in RunSettings().as_config()  # older result folders stay resumable
    assert RunSettings(residual_carry="1,0.25").residual_carry == ResidualCarry(1.0, 0.25)
    with pytest.raises(ConfigError, match="--residual-carry needs rate coding"):
        RunSettings(residual_carry="0.5", coding="binary").check()
    with pytest.raises(ConfigError, match="binary coding starts every decision afresh"):
        convert(mlp(), torch.randn(50, 5), coding="binary", residual_carry=ResidualCarry(0.5))
    # delta coding carries state, but exactly: nothing for a carry to shift, so it is refused too
    with pytest.raises(ConfigError, match="--residual-carry needs rate coding: delta coding's carried state"):
        RunSettings(residual_carry="0.5", coding="delta").check()
    with pytest.raises(ConfigError, match="delta coding's carried state .* a residual carry needs rate coding"):
        convert(mlp(), torch.randn(50, 5), coding="delta", residual_carry=ResidualCarry(0.5))


def test_a_saved_snn_keeps_its_residual_carry(tmp_path):
    net = mlp()
    checkpoint = DQNCheckpoint(net, 3, (5,), "MlpPolicy", "DQN", None, None, "<test>")
    snn = convert(checkpoint, torch.randn(300, 5), residual_carry=ResidualCarry(0.3, 0.4))
    save_snn(snn, checkpoint, tmp_path / "snn.pt")
    loaded, _ = load_snn(tmp_path / "snn.pt")
    assert loaded.residual_carry == ResidualCarry(0.3, 0.4) and loaded.carry_state and loaded.initial_membrane == 0.5
    for x in (torch.randn(6, 5) for _ in range(3)):  # consecutive decisions: the carried starts match too
        torch.testing.assert_close(loaded.readouts(x, 16), snn.readouts(x, 16), rtol=0, atol=0)
    plain = convert(checkpoint, torch.randn(300, 5))
    save_snn(plain, checkpoint, tmp_path / "plain.pt")
    assert load_snn(tmp_path / "plain.pt")[0].residual_carry is None


def test_evaluate_plays_with_a_residual_carry_and_records_it():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    dqn = DQNCheckpoint(q_network=net, n_actions=2, observation_shape=(4,), policy="MlpPolicy", algorithm="DQN",
                        sb3_version=None, env_id="CartPole-v1", source="<test>")
    from dqn2snn_plugin.experiments.evaluation import evaluate

    # 3 games on 2 envs: envs drop out at different steps, so the carried rows must follow
    settings = RunSettings(episodes=3, calibration_frames=50, max_steps=40, n_envs=2, residual_carry="0.5")
    result = evaluate(dqn, T=8, percentile=99.9, settings=settings)
    assert result.header.settings["residual_carry"] == "0.5,0.5"
    assert result.snn.agreement_snn_visited["spikes+membrane"].n_states == sum(result.snn.score.lengths)


def test_the_command_line_refuses_a_bad_residual_carry_in_one_line_before_any_work(capsys, tmp_path):
    from dqn2snn_plugin.cli import main

    missing = str(tmp_path / "no-such-checkpoint.zip")  # never read: the refusal comes first
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", missing, "--residual-carry", "nan"])
    assert exit_info.value.code == 2 and "residual carry scale must be a number in [0, 1]" in capsys.readouterr().err
    assert main(["evaluate", missing, "--coding", "binary", "--residual-carry", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err == "dqn2snn: error: --residual-carry needs rate coding: binary coding starts every decision afresh\n"
    with pytest.raises(SystemExit):  # sweep's held-out states are not consecutive: no such flag there
        main(["sweep", missing, "--residual-carry", "0.5", "-o", str(tmp_path / "out")])
    assert "unrecognized arguments: --residual-carry" in capsys.readouterr().err
