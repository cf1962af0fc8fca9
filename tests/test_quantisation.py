"""Integer weights (`dqn2snn_plugin.io.quantisation`): hand-picked values at 0.4 and 0.6 of a step, so
rounding, truncation and flooring give different integers, and the step from the largest magnitude."""

from __future__ import annotations

import numpy as np
import pytest

from dqn2snn_plugin.errors import ConfigError
from dqn2snn_plugin.io.quantisation import quantise


def test_weights_and_biases_round_to_the_nearest_step():
    # 4 bits: levels -7..7; the largest |w| is 3.5, so the step is 0.5 and w / step is 7, 2.4, 2.6, -2.4, -2.6
    weight = np.array([[3.5], [1.2], [1.3], [-1.2], [-1.3]])
    bias = np.array([1.2, 1.3, -1.2, -1.3, 5.05])  # / 0.5: 2.4, 2.6, -2.4, -2.6, 10.1
    grid = quantise(weight, bias, 4, per_channel=False)
    assert float(grid.step) == 0.5
    np.testing.assert_array_equal(grid.weight[:, 0], [3.5, 1.0, 1.5, -1.0, -1.5])  # integers 7, 2, 3, -2, -3
    np.testing.assert_array_equal(grid.bias, [1.0, 1.5, -1.0, -1.5, 5.0])  # integers 2, 3, -2, -3, 10
    assert grid.bias_bits == 5  # 10 needs 4 bits of magnitude and a sign: -16..15


def test_the_step_comes_from_the_largest_magnitude_per_channel():
    # channel 0's largest |w| is negative; channel 2 is all zero and keeps step 1
    weight = np.array([[-3.5, 0.7], [0.35, 0.1], [0.0, 0.0]])
    grid = quantise(weight, np.array([0.26, 0.026, 0.6]), 4, per_channel=True)
    np.testing.assert_allclose(grid.step, [0.5, 0.05, 1.0])
    np.testing.assert_allclose(grid.weight, [[-3.5, 0.5], [0.35, 0.1], [0.0, 0.0]])  # 0.7 / 0.5 = 1.4 -> 1
    np.testing.assert_allclose(grid.bias, [0.5, 0.05, 1.0])  # 0.52, 0.52, 0.6 steps -> 1 each
    assert grid.bias_bits == 2
    layer = quantise(weight, np.zeros(3), 4, per_channel=False)
    assert float(layer.step) == 0.5 and layer.bias_bits == 1


def test_two_bits_give_minus_one_zero_and_one_step():
    grid = quantise(np.array([[-2.0, -0.9, 0.9, 1.1, 2.0]]), np.zeros(1), 2, per_channel=False)
    assert float(grid.step) == 2.0  # one level each side: the step is the largest |w|
    np.testing.assert_array_equal(grid.weight, [[-2.0, 0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ConfigError, match="from 2 to 16"):
        quantise(np.ones((1, 1)), np.zeros(1), 1, per_channel=False)
