"""`load_dqn(module)`: any feed-forward ReLU network traced into plain layers with the module's own Q-values,
and every layer that cannot be converted refused in one line that names it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dqn2snn_plugin import load_dqn
from dqn2snn_plugin.checkpoint import describe
from dqn2snn_plugin.errors import UnsupportedLayerError

PLAIN = (nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten)


def _frames(shape, n=8, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _randomise_norms(module: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine weights (so folding them is tested)."""
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(generator=generator)
            m.running_var.uniform_(0.5, 2.0, generator=generator)
            m.weight.data.normal_(generator=generator)
            m.bias.data.normal_(generator=generator)
    return module


def _check(module: nn.Module, obs: torch.Tensor, assert_close_q, **kwargs):
    ckpt = load_dqn(module, **kwargs)
    assert all(isinstance(m, PLAIN) for m in ckpt.q_network)
    with torch.no_grad():
        theirs = module.eval()(obs.float())
    assert_close_q(ckpt.q_values(obs), theirs)
    return ckpt


class Nips2013(nn.Module):
    """The NIPS-2013 DQN written with functional ReLUs, a view and `x.float() / 255.0` in its forward."""

    def __init__(self, n_actions: int = 6):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(4, 16, 8, stride=4), nn.Conv2d(16, 32, 4, stride=2)
        self.fc1, self.fc2 = nn.Linear(2592, 256), nn.Linear(256, n_actions)

    def forward(self, x):
        x = F.relu(self.conv1(x.float() / 255.0))
        x = F.relu(self.conv2(x))
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


def test_nips_2013_module_folds_its_255_into_the_first_conv(assert_close_q):
    torch.manual_seed(0)
    module = Nips2013()
    ckpt = _check(module, _frames((4, 84, 84)), assert_close_q)
    assert ckpt.observation_shape == (4, 84, 84) and ckpt.n_actions == 6
    torch.testing.assert_close(ckpt.q_network[0].weight, module.conv1.weight / 255)
    assert "x 1/255 (in the network's forward)" in describe(ckpt)


class Dueling(nn.Module):
    """A dueling DQN (Wang et al. 2016): a conv trunk, value and advantage streams, V + A - mean(A)."""

    def __init__(self, n_actions: int = 5, hidden: bool = True):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Flatten())
        width = 8 * 8 * 8
        self.value = nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, 1)) if hidden else nn.Linear(width, 1)
        self.advantage = (nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, n_actions)) if hidden
                          else nn.Linear(width, n_actions))

    def forward(self, x):
        h = self.trunk(x / 255)
        v, a = self.value(h), self.advantage(h)
        return v + a - a.mean(dim=1, keepdim=True)


@pytest.mark.parametrize("hidden", [True, False])
def test_a_dueling_head_folds_exactly_into_one_plain_head(hidden, assert_close_q):
    torch.manual_seed(0)
    module = Dueling(hidden=hidden)
    ckpt = _check(module, _frames((2, 10, 10)), assert_close_q)
    linears = [m for m in ckpt.q_network if isinstance(m, nn.Linear)]
    assert len(linears) == (2 if hidden else 1) and linears[-1].out_features == 5
    if hidden:  # the two hidden layers side by side
        assert linears[0].out_features == 32


def test_dueling_written_with_a_mean_method_and_the_advantage_first(assert_close_q):
    class Written(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.v, self.a = nn.Linear(4, 16), nn.Linear(16, 1), nn.Linear(16, 3)

        def forward(self, x):
            h = torch.relu(self.body(x))
            a = self.a(h)
            return (a - a.mean(-1, keepdim=True)) + self.v(h)

    torch.manual_seed(0)
    _check(Written(), torch.randn(16, 4), assert_close_q)


def test_batch_norm_dropout_identity_and_avg_pools_fold_away(assert_close_q):
    torch.manual_seed(0)
    module = _randomise_norms(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.AvgPool2d(2), nn.ReLU(),  # conv then pool
        nn.AvgPool2d(2), nn.Conv2d(4, 6, 2), nn.ReLU(), nn.Dropout2d(0.3),           # pool then conv
        nn.AvgPool2d(3, stride=1), nn.Flatten(), nn.Identity(), nn.Linear(24, 8),     # pool then linear
        nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3),
    ))
    ckpt = _check(module, _frames((2, 20, 20)), assert_close_q, observation_shape=(2, 20, 20))
    assert [type(m).__name__ for m in ckpt.q_network] == [
        "Conv2d", "ReLU", "Conv2d", "ReLU", "Flatten", "Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("scaling", [lambda x: x / 255, lambda x: x.float() / 255.0, lambda x: x * (1 / 255),
                                     lambda x: (x.to(torch.float32) / 255.0).contiguous()])
def test_input_scalings_in_forward_are_recognised(scaling, assert_close_q):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))

        def forward(self, x):
            return self.net(scaling(x))

    torch.manual_seed(0)
    ckpt = _check(Scaled(), _frames((1, 8, 8)), assert_close_q)
    assert ckpt.input_scaling.startswith("x 1/255")


def test_the_users_module_is_not_changed():
    torch.manual_seed(0)
    module = _randomise_norms(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))).train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    load_dqn(module)
    assert module.training and all(torch.equal(before[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize(("layer", "message"), [
    (nn.MaxPool2d(2), r"layer 2 is a MaxPool2d, which cannot be converted: a maximum is not a weighted sum"),
    (nn.LeakyReLU(), r"layer 2 is a LeakyReLU, which cannot be converted: only ReLU maps onto a spike rate"),
    (nn.Tanh(), r"layer 2 is a Tanh, .*only ReLU"),
])
def test_layers_that_cannot_convert_are_refused_by_name(layer, message):
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), layer, nn.Flatten(), nn.Linear(2 * 3 * 3, 2))
    with pytest.raises(UnsupportedLayerError, match=r"^<in-memory Sequential>: " + message) as info:
        load_dqn(module, observation_shape=(1, 8, 8))
    assert "\n" not in str(info.value)


class NoisyLinear(nn.Module):
    """A noisy layer (Fortunato et al. 2018): new weights drawn on every call."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight_mu = nn.Parameter(torch.zeros(n_out, n_in))
        self.weight_sigma = nn.Parameter(torch.full((n_out, n_in), 0.1))

    def forward(self, x):
        return F.linear(x, self.weight_mu + self.weight_sigma * torch.randn_like(self.weight_sigma))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.head = nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        out, _ = self.lstm(x.unsqueeze(1))
        return self.head(out[:, -1])


@pytest.mark.parametrize(("module", "message"), [
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), NoisyLinear(8, 2)), r"layer 2 is a NoisyLinear.*draws new weights"),
    (Recurrent(), r"layer lstm is a LSTM.*recurrent layer carries state"),
    (nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2)), r"layer 1 is a LayerNorm"),
])
def test_noisy_recurrent_and_normalising_layers_are_refused_by_name(module, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        load_dqn(module)


def test_operations_it_does_not_read_are_refused_not_guessed():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)) + x)

    class Softmaxed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x):
            return torch.sigmoid(self.a(x))

    with pytest.raises(UnsupportedLayerError, match=r"combines tensors that do not come straight from a Linear layer \(node add\)"):
        load_dqn(Residual())
    with pytest.raises(UnsupportedLayerError, match=r"calls sigmoid"):
        load_dqn(Softmaxed())


def test_a_batch_norm_after_a_relu_is_refused():
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with pytest.raises(UnsupportedLayerError, match=r"layer 2 is a BatchNorm1d that does not follow a Conv2d or Linear"):
        load_dqn(module)


def test_forward_with_data_dependent_control_flow_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else -self.a(x)

    with pytest.raises(UnsupportedLayerError, match=r"cannot be traced by torch\.fx"):
        load_dqn(Branchy())


def test_dueling_streams_of_different_depths_are_refused_by_name():
    class Uneven(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 8)
            self.value = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
            self.advantage = nn.Linear(8, 3)

        def forward(self, x):
            h = torch.relu(self.body(x))
            a = self.advantage(h)
            return self.value(h) + a - a.mean(dim=1, keepdim=True)

    with pytest.raises(UnsupportedLayerError, match=r"value and advantage streams have different depths \(2, 1 Linear"):
        load_dqn(Uneven())
