"""Integer weights for neuromorphic chips: symmetric b-bit quantisation of one folded synaptic layer.

Loihi 2, Speck and Xylo hold weights as signed integers of 8 bits or fewer. A layer's weights W become
q * s with integers q in [-(2**(b-1) - 1), 2**(b-1) - 1] (symmetric: zero stays exactly zero and no
code is spent on an asymmetric extreme) and one step s per layer, or one per output channel
(`per_channel=True`: each output neuron's membrane has its own unit, so a channel of small weights
keeps its resolution), s = max |W| / (2**(b-1) - 1).

Biases are rounded onto the same grid, q_b = round(b / s) with no clipping: a bias is added to the
membrane in the weights' units, so on a chip it is an integer in those units, and chips keep it in a
wider register than the weights (Loihi's bias is a mantissa with an exponent). The number of bits
it needs is reported, so a target with a narrower bias register can check it fits.

The quantised layer is returned dequantised (q * s, threshold still 1), so every framework's NIR
importer runs it unchanged; the integers are q = W / s exactly, and in integer units the threshold is
1 / s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dqn2snn_plugin.errors import ConfigError


@dataclass(frozen=True)
class QuantisedLayer:
    """One layer on the integer grid: dequantised weight and bias, the step s (scalar or per channel)."""

    weight: np.ndarray
    bias: np.ndarray
    step: np.ndarray  # [] per layer or [C_out] per channel
    bias_bits: int  # signed bits the integer biases need


def check_bits(bits: int) -> int:
    """Weight bits: an integer from 2 (levels -1, 0, 1) to 16."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ConfigError(f"weight_bits must be an integer from 2 to 16 (or None for float weights), got {bits!r}")
    return int(bits)


def quantise(weight: np.ndarray, bias: np.ndarray, bits: int, per_channel: bool) -> QuantisedLayer:
    """Symmetric `bits`-bit weights (per layer, or per output channel = axis 0), biases on the same grid."""
    levels = 2 ** (check_bits(bits) - 1) - 1
    axes = tuple(range(1, weight.ndim)) if per_channel else None
    peak = np.abs(weight).max(axis=axes, keepdims=per_channel)
    step = np.where(peak > 0, peak / levels, 1.0).astype(weight.dtype)  # an all-zero channel stays zero
    q = np.clip(np.rint(weight / step), -levels, levels)
    bias_step = step.reshape(-1) if per_channel else step
    q_bias = np.rint(bias / bias_step)
    bias_bits = int(np.ceil(np.log2(np.abs(q_bias).max() + 1))) + 1 if q_bias.size and np.abs(q_bias).max() > 0 else 1
    return QuantisedLayer((q * step).astype(weight.dtype), (q_bias * bias_step).astype(bias.dtype),
                          np.asarray(bias_step), bias_bits)
