"""BinaryCodingRecipe inside SpikingJelly's own Converter: FewSpikeNode graph, single- and multi-step runs."""

import copy
import dataclasses

import pytest
import torch
from spikingjelly.activation_based import ann2snn, functional
from spikingjelly.activation_based.neuron.few_spike import FewSpikeNode
from torch import nn

from dqn2snn_plugin import convert
from dqn2snn_plugin.adapters.spikingjelly import BinaryCodingRecipe
from dqn2snn_plugin.errors import ConfigError

from conftest import atari_checkpoint


@pytest.fixture(scope="module")
def breakout64(atari_observations):
    """Breakout in float64 (no activation within rounding noise of a level), calibration and test states:
    the six real frames plus random ones."""
    checkpoint = atari_checkpoint()
    checkpoint = dataclasses.replace(checkpoint, q_network=copy.deepcopy(checkpoint.q_network).double())
    generator = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 256, (34, 4, 84, 84), generator=generator, dtype=torch.uint8)
    states = torch.cat([torch.as_tensor(atari_observations), noise])
    return checkpoint, states[6:26], states


def _graph(checkpoint, calibration, bits=8):
    recipe = BinaryCodingRecipe(checkpoint.prepare(calibration), bits=bits, percentile=99.99)
    return ann2snn.Converter(recipe=recipe).convert(checkpoint.q_network)


def test_the_graph_holds_few_spike_nodes_and_computes_our_binary_snn(breakout64):
    checkpoint, calibration, states = breakout64
    before = copy.deepcopy(checkpoint.q_network.state_dict())
    graph = _graph(checkpoint, calibration)
    nodes = [m for m in graph.modules() if isinstance(m, FewSpikeNode)]
    assert len(nodes) == 4 and all(node.K == 8 for node in nodes)
    assert not any(isinstance(m, nn.ReLU) for m in graph.modules())
    # scalers in the network's precision: float32 ones flip spikes of a float64 network near thresholds
    assert all(buffer.dtype == torch.float64 for buffer in graph.buffers())
    snn = convert(checkpoint, calibration, percentile=99.99, channel_wise=True, coding="binary", T=8)
    with torch.no_grad():
        q = graph(checkpoint.prepare(states))
    torch.testing.assert_close(q, snn(states), rtol=0, atol=1e-9)
    assert torch.equal(q.argmax(1), snn.act(states))
    after = checkpoint.q_network.state_dict()  # the user's network keeps its biases and weights
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_multi_step_mode_runs_the_K_steps_of_each_layer(breakout64):
    checkpoint, calibration, states = breakout64
    graph = _graph(checkpoint, calibration, bits=6)
    x = checkpoint.prepare(states)
    with torch.no_grad():
        single = graph(x)
    spikes = []
    for node in (m for m in graph.modules() if isinstance(m, FewSpikeNode)):
        node.register_forward_hook(lambda _, __, out: spikes.append(out.ne(0).sum((0, *range(2, out.ndim)))))
    functional.set_step_mode(graph, "m")
    sequence = torch.cat([x[None], x.new_zeros(5, *x.shape)])  # the observation at step 0, then nothing
    with torch.no_grad():
        steps = graph(sequence)
    assert steps.shape == (6, len(states), 4)
    torch.testing.assert_close(steps.sum(0), single, rtol=0, atol=1e-9)
    snn = convert(checkpoint, calibration, percentile=99.99, channel_wise=True, coding="binary", T=6)
    snn(states)
    assert [s.tolist() for s in spikes] == [s.long().tolist() for s in snn.last_stats.spikes]


@pytest.mark.parametrize("bits, message", [(25, "at most 24 bits"), (0, "positive integer")])
def test_binary_recipe_refuses_bad_bit_counts(breakout64, bits, message):
    with pytest.raises(ConfigError, match=message):
        BinaryCodingRecipe(breakout64[1], bits=bits)
