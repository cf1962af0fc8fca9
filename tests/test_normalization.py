"""Layer scales: exact global percentiles of known data, the ranking choices, and refused scales."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from dqn2snn_plugin.errors import ConfigError, NormalizationError, UnsupportedLayerError
from dqn2snn_plugin.normalization import check_percentile, layer_scales, percentile_scale, scale_shares, trim_states


def identity_net(width: int = 3) -> nn.Sequential:
    """ReLU(x) then an identity output: the hidden activations are the (clipped) inputs themselves."""
    net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(width))
        net[0].bias.zero_()
    return net


@pytest.mark.parametrize("p", [50.0, 90.0, 99.0, 99.9, 12.5])
def test_percentile_matches_numpy_over_the_whole_set(p):
    values = torch.rand(1000, 4, 3, 3)
    ours = percentile_scale(values, p, "all", channel_wise=False)
    assert float(ours) == pytest.approx(np.percentile(values.numpy(), p), rel=1e-6)


def test_known_percentile_on_known_data():
    acts = torch.arange(101, dtype=torch.float32).view(101, 1)  # 0, 1, ..., 100
    assert float(percentile_scale(acts, 99.0, "all", False)) == pytest.approx(99.0)
    assert float(percentile_scale(acts, 99.5, "all", False)) == pytest.approx(99.5)
    assert float(percentile_scale(acts, 100.0, "all", False)) == 100.0
    # ranking only the non-zero values: 1..100, 50th percentile = 50.5
    assert float(percentile_scale(acts, 50.0, "nonzero", False)) == pytest.approx(50.5)
    assert float(percentile_scale(acts, 50.0, "all", False)) == pytest.approx(50.0)


def test_channel_wise_scales_rank_each_channel_separately():
    acts = torch.stack([torch.full((10, 2, 2), 1.0), torch.full((10, 2, 2), 5.0)], dim=1)
    scale = percentile_scale(acts, 99.0, "all", channel_wise=True)
    assert scale.tolist() == pytest.approx([1.0, 5.0])


def test_layer_scales_is_global_not_a_per_batch_average():
    net = identity_net(1)
    data = torch.cat([torch.full((512, 1), 1.0), torch.full((512, 1), 9.0)])  # two very different batches
    scales = layer_scales(net, data, "max", batch_size=512, state_trim=0)
    assert float(scales.hidden[0]) == 9.0
    median = layer_scales(net, data, 50.0, batch_size=512, state_trim=0)
    assert float(median.hidden[0]) == pytest.approx(5.0)  # between the two halves: exact order statistics


def test_output_scale_is_positive_even_when_all_q_values_are_negative():
    net = identity_net(3)
    with torch.no_grad():
        net[2].weight.fill_(0.1)
        net[2].bias.fill_(-5.0)  # every Q-value about -5: a losing agent
    data = torch.rand(200, 3)
    scales = layer_scales(net, data, 99.9)
    assert scales.output > 0
    assert scales.output == pytest.approx(float(np.percentile(net(data).detach().abs().numpy(), 99.9)), rel=1e-6)


def test_a_layer_that_never_fires_is_refused():
    net = identity_net(2)
    for rank in ("all", "nonzero"):
        with pytest.raises(NormalizationError, match="hidden layer 0"):
            layer_scales(net, -torch.rand(50, 2), 99.9, rank=rank)  # ReLU of negative inputs: all zeros


def test_a_percentile_landing_on_zeros_is_refused_unless_ranking_nonzero():
    net = identity_net(1)
    data = torch.cat([torch.zeros(95, 1), torch.rand(5, 1) + 0.5])
    with pytest.raises(NormalizationError):
        layer_scales(net, data, 50.0, rank="all")
    assert float(layer_scales(net, data, 50.0).hidden[0]) > 0.5  # default: non-zero values


@pytest.mark.parametrize("bad", [0, -1, 100.5, "abc", float("nan")])
def test_bad_percentiles(bad):
    with pytest.raises(ConfigError):
        check_percentile(bad)


def test_max_is_the_100th_percentile():
    assert check_percentile("max") == 100.0 and check_percentile("99.9") == 99.9


@pytest.mark.parametrize("layer", [nn.Tanh(), nn.LayerNorm(3), nn.Sigmoid()])
def test_unsupported_layers_are_named(layer):
    net = nn.Sequential(nn.Linear(3, 3), layer, nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(UnsupportedLayerError, match=type(layer).__name__):
        layer_scales(net, torch.rand(10, 3))


def test_a_channel_that_is_never_active_keeps_the_layers_scale():
    """Channel-wise scales: a dead channel gets the layer-wide percentile (any positive value would do,
    but zero would divide by zero in the folding); the live channels get their own percentiles."""
    net = identity_net(3)
    # channels 0 and 1 are zero on about 30% of the states (ranked out: rank="nonzero"); channel 2 always
    data = (torch.rand(400, 3) - 0.3) * torch.tensor([1.0, 4.0, 0.0]) - torch.tensor([0.0, 0.0, 1.0])
    live = torch.relu(data[:, :2])
    for p in (99.0, "max"):
        scales = layer_scales(net, data, p, channel_wise=True, state_trim=0)
        q = 100.0 if p == "max" else p
        layer_wide = np.percentile(live[live > 0].numpy(), q)
        per_channel = [np.percentile(live[:, c][live[:, c] > 0].numpy(), q) for c in range(2)]
        assert scales.hidden[0].tolist() == pytest.approx([*per_channel, layer_wide], rel=1e-6)


def outlier_set(n: int = 2000, n_odd: int = 24) -> torch.Tensor:
    """n states of one input (uniform 0..1), n_odd of them (1.2%) four times larger: the episode starts."""
    generator = torch.Generator().manual_seed(0)
    data = torch.rand(n, 1, generator=generator)
    data[:n_odd] *= 4.0
    return data


def test_a_small_minority_of_unusual_states_cannot_set_the_scale():
    net, data = identity_net(1), outlier_set()
    plain = layer_scales(net, data, 99.9, state_trim=0)
    robust = layer_scales(net, data, 99.9)  # default: the 2% of states with the largest activations left out
    clean = layer_scales(net, data[24:], 99.9, state_trim=0)
    assert float(plain.hidden[0]) > 3.0  # the 24 odd states fill the top 0.1%
    assert float(robust.hidden[0]) == pytest.approx(float(clean.hidden[0]), abs=0.02) and robust.state_trim == 2.0
    assert scale_shares(net, data, plain)[0] < 0.012  # set by fewer than 1.2% of the states
    assert scale_shares(net, data, robust)[0] > 0.012


def test_trim_leaves_out_the_states_with_the_largest_activations_only():
    acts = torch.arange(100, dtype=torch.float32).view(100, 1, 1)
    assert trim_states(acts, 2.0).flatten().tolist() == list(range(98))
    assert trim_states(acts[:40], 2.0).shape[0] == 40  # floor(40 * 2%) = 0: tiny sets are not trimmed
    assert layer_scales(identity_net(1), torch.arange(10.0).view(10, 1), "max").hidden[0] == 9.0
    for bad in (-1, 50, "2", True):
        with pytest.raises(ConfigError, match="state_trim"):
            layer_scales(identity_net(1), torch.rand(10, 1), state_trim=bad)


def test_scale_shares_follow_channel_wise_scales():
    net = identity_net(2)
    data = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    scales = layer_scales(net, data, 50.0, channel_wise=True, state_trim=0)  # 2.5 and 25
    assert scale_shares(net, data, scales) == (0.5,)
    with pytest.raises(ConfigError, match="2 spiking layers"):
        scale_shares(net, data, dataclasses.replace(scales, hidden=scales.hidden * 2))
