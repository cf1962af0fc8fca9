"""Quantisation-aware distillation (issue 6): the QCFS activation, the exact spiking forward, `distill`."""

import numpy as np
import pytest
import torch

from dqn2snn_plugin import convert, tune
from dqn2snn_plugin.improve.distillation import (
    ClipFloorShift,
    DistillationLoss,
    distill,
    quantised_copy,
    relu_copy,
    spiking_forward,
)
from dqn2snn_plugin.errors import CalibrationError, ConfigError
from dqn2snn_plugin.normalization import LayerScales
from dqn2snn_plugin.io.store import load_snn, save_snn


def test_clip_floor_shift_rounds_to_levels_and_passes_gradients():
    act = ClipFloorShift(threshold=2.0, levels=4)
    x = torch.tensor([-1.0, 0.2, 0.3, 1.0, 1.76, 5.0], requires_grad=True)
    y = act(x)
    # 2 * clip(floor(x * 4 / 2 + 0.5) / 4, 0, 1)
    torch.testing.assert_close(y.detach(), torch.tensor([0.0, 0.0, 0.5, 1.0, 2.0, 2.0]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # straight through inside (0, lambda)
    assert act.threshold.grad is not None


def test_margin_term_penalises_only_a_flipped_or_too_close_greedy_action():
    """Hinge on the DQN's greedy action: zero once the copy keeps it ahead by half the DQN's gap."""
    teacher = torch.tensor([[1.0, 0.9, 0.0], [0.0, 2.0, 1.0]])  # gaps 0.1 and 1.0
    plain, with_margin = DistillationLoss(teacher, 0.5), DistillationLoss(teacher, 0.5, margin=2.0)
    kept = teacher + torch.tensor([[0.0, -0.1, 0.0], [0.0, 0.0, 0.0]])  # still ahead by >= half the gap
    assert with_margin(kept, teacher) == pytest.approx(float(plain(kept, teacher)))
    flipped = torch.tensor([[0.9, 1.0, 0.0], [0.0, 2.0, 1.0]], requires_grad=True)
    extra = with_margin(flipped, teacher) - plain(flipped, teacher)
    # state 0: best other 1.0 - greedy 0.9 + gap / 2 = 0.15, over the temperature, mean over 2 states, times 2
    assert float(extra.detach()) == pytest.approx(2.0 * 0.15 / 0.5 / 2)
    extra.backward()
    assert flipped.grad[0, 0] < 0 < flipped.grad[0, 1]  # descent raises the greedy action, lowers its rival
    assert flipped.grad[1].abs().sum() == 0


@pytest.mark.parametrize("thresholds", [[1.3, 0.9], [torch.linspace(0.5, 2.0, 48), torch.linspace(0.3, 1.2, 32)]],
                         ids=["layer-wise", "channel-wise"])
def test_spiking_forward_is_the_converted_snn_readout(mlp_checkpoint, thresholds):
    """The training forward simulates exactly the SNN that `convert` builds from the same copy."""
    states = torch.randn(200, 6)
    student = quantised_copy(mlp_checkpoint.q_network, thresholds, levels=8)
    network, lambdas = relu_copy(student)
    scales = LayerScales(lambdas, 1.0, "test", "nonzero", lambdas[0].ndim == 1, 0)
    snn = convert(network, None, scales=scales, initial_membrane="half").double()  # float64: no rounding ties
    student.double()
    for T in (3, 8, 13):
        with torch.no_grad():
            ours = spiking_forward(student, states.double(), T)
        torch.testing.assert_close(ours, snn(states.double(), T, readout="spikes+membrane"))


@pytest.mark.parametrize("channel_wise", [True, False])
def test_distill_keeps_the_users_network_and_returns_a_convertible_copy(mlp_checkpoint, channel_wise):
    states = torch.randn(400, 6).numpy()
    before = [p.clone() for p in mlp_checkpoint.q_network.parameters()]
    result = distill(mlp_checkpoint, states, T=8, epochs=2, snn_epochs=1, batch_size=64, channel_wise=channel_wise)
    for old, new in zip(before, mlp_checkpoint.q_network.parameters()):
        assert torch.equal(old, new)
    assert [row["phase"] for row in result.history] == ["qcfs", "qcfs", "qcfs", "snn", "snn"]
    assert result.checkpoint.q_network is not mlp_checkpoint.q_network
    assert result.scales.channel_wise == channel_wise
    assert all(bool((s > 0).all()) and s.ndim == int(channel_wise) for s in result.scales.hidden)
    snn = result.to_snn()
    explicit = convert(result.checkpoint, None, scales=result.scales, initial_membrane="half", T=8)
    assert snn.T == 8 and snn.initial_membrane == 0.5
    torch.testing.assert_close(snn(states[:10]), explicit(states[:10]))


def test_distillation_raises_agreement_of_a_few_step_snn(mlp_checkpoint):
    """At T = 4 the plain conversion is poor; the distilled SNN agrees better on held-out states."""
    rng = np.random.default_rng(0)
    fit, test = rng.standard_normal((1000, 6)).astype(np.float32), rng.standard_normal((500, 6)).astype(np.float32)
    actions = mlp_checkpoint.act(test)
    plain = convert(mlp_checkpoint, fit, initial_membrane="half", T=4)
    result = distill(mlp_checkpoint, fit, T=4, epochs=6, snn_epochs=3, batch_size=64, lr=2e-2)
    snn = result.to_snn()
    plain_rate = float((plain.act(test) == actions).float().mean())
    distilled_rate = float((snn.act(test) == actions).float().mean())
    assert distilled_rate > plain_rate + 0.05, (plain_rate, distilled_rate)


@pytest.mark.parametrize("kwargs", [{"T": 0}, {"epochs": -1}, {"lr": 0.0}, {"margin": -1.0}, {"validation_fraction": 1.0}])
def test_bad_settings_are_named(mlp_checkpoint, kwargs):
    options = {"T": 8, **kwargs}
    with pytest.raises(ConfigError):
        distill(mlp_checkpoint, np.zeros((64, 6), np.float32), options.pop("T"), **options)


def test_too_few_states_are_refused(mlp_checkpoint):
    with pytest.raises(CalibrationError, match="at least 16"):
        distill(mlp_checkpoint, np.zeros((8, 6), np.float32), 8)


def test_a_distilled_snn_saves_its_own_weights_and_reloads(mlp_checkpoint, tmp_path):
    states = torch.randn(300, 6).numpy()
    result = distill(mlp_checkpoint, states, T=8, epochs=1, snn_epochs=1, batch_size=64)
    snn = result.to_snn()
    save_snn(snn, mlp_checkpoint, tmp_path / "snn.pt")  # the user's checkpoint: metadata only
    again, network = load_snn(tmp_path / "snn.pt")
    torch.testing.assert_close(again(states, 8), snn(states, 8))
    for ours, theirs in zip(network.q_network.parameters(), result.checkpoint.q_network.parameters()):
        assert torch.equal(ours, theirs)


def test_tune_can_let_a_distilled_copy_compete(mlp_checkpoint):
    states = torch.randn(400, 6).numpy()
    snn = tune(mlp_checkpoint, states, T=4, percentiles=(99.9,), inits=("half",), bias_calibration=(False,),
               distillation=True, distill_options={"epochs": 2, "snn_epochs": 1, "batch_size": 64})
    assert [r.distilled for r in sorted(snn.tuning_report, key=lambda r: r.distilled)] == [False, True]
    assert snn.validation_agreement == max(r.agreement for r in snn.tuning_report)


def test_binary_distillation_trains_2_to_the_T_levels_and_its_snn_is_the_copy(mlp_checkpoint):
    states = torch.randn(400, 6).numpy()
    result = distill(mlp_checkpoint, states, T=3, epochs=2, snn_epochs=2, batch_size=64, coding="binary")
    assert [row["phase"] for row in result.history] == ["qcfs"] * 3  # no SNN phase: the SNN is the copy
    assert {layer.levels for layer in result.quantised if hasattr(layer, "levels")} == {7}
    snn = result.to_snn()
    assert (snn.coding, snn.T) == ("binary", 3)
    with torch.no_grad():
        copy_q = result.quantised.double()(torch.as_tensor(states[:50]).double())
    torch.testing.assert_close(snn.double()(states[:50]), copy_q)
    with pytest.raises(ConfigError, match="at most 24 bits"):
        distill(mlp_checkpoint, states, T=32, coding="binary")


def test_distill_returns_its_best_epoch_not_its_last(mlp_checkpoint):
    """A step size large enough to make training worse: the copy returned is the one with the best
    validation agreement in its history (here the starting copy), measured again here on the same held-out
    states (the first quarter of torch.randperm with the seed, as `distill` splits them)."""
    states = np.random.default_rng(0).standard_normal((200, 6)).astype(np.float32)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    held_out = torch.as_tensor(states)[order[:50]]
    with torch.no_grad():
        teacher = mlp_checkpoint.q_network(held_out).argmax(1)
    qcfs = distill(mlp_checkpoint, states, T=8, epochs=3, snn_epochs=0, batch_size=32, lr=1.0,
                   validation_fraction=0.25)
    rates = [row["validation_agreement"] for row in qcfs.history]
    assert rates[-1] < max(rates)  # the last epoch is not the best one
    with torch.no_grad():
        assert float((qcfs.quantised(held_out).argmax(1) == teacher).float().mean()) == pytest.approx(max(rates))
    both = distill(mlp_checkpoint, states, T=8, epochs=3, snn_epochs=2, batch_size=32, lr=1.0,
                   validation_fraction=0.25)
    snn_rates = [row["validation_agreement"] for row in both.history if row["phase"] == "snn"]
    assert snn_rates[-1] < max(snn_rates)
    snn_rate = float((both.to_snn().act(held_out.numpy()) == teacher).float().mean())
    assert snn_rate == pytest.approx(max(snn_rates))
