"""Binary-weighted spike coding: each neuron sends its activation as a T-bit number, most significant bit first.

Rate coding spends up to T spikes on T + 1 levels. Here a layer's neurons get T time steps to
integrate their input and T more to emit it, so a neuron sends at most T spikes for 2**T levels,
and an activation costs as many spikes as its binary code has ones. This is the few-spikes (FS)
neuron of Stöckl & Maass (Nature Machine Intelligence 2021) with binary parameters, the
"weighted spikes" of Kim et al. (Neurocomputing 2018):

- fire: the membrane V (in units of the least significant bit) starts at the integrated input
  plus V0 (1/2: round to the nearest level, 0: truncate); at fire step t = 0 .. T-1 the threshold
  is 2**(T-1-t): S_t = [V >= 2**(T-1-t)], then V -= S_t * 2**(T-1-t) (reset by subtraction).
- integrate: the next layer's membrane doubles each step before adding that step's input
  current, V <- 2 V + I_t, so after T steps it holds sum_t 2**(T-1-t) I_t: the weighted input of
  the whole code. Doubling is a neuron update, so every synaptic event is still one addition.

The first layer integrates the constant analog observation (V = (2**T - 1) I); the output layer
integrates and never fires, and its membrane / (2**T - 1) is the Q-value readout. With folded
weights (see `conversion.fold_scales`) each layer's rounded rate equals the clip-floor-shift copy
of the DQN with 2**T - 1 levels (`distillation.ClipFloorShift`), exactly: no timing error.
This module holds the coding math only; `engine.binary` schedules it layer by layer, and
`coding.BINARY` is the strategy object (defaults, limits, latency) the rest of the package asks.

The frameworks run the same neuron: SpikingJelly 2.0's `FewSpikeNode` with the table of
`few_spike_table` (thresholds 2**(T-1-t) - V0, subtraction 2**(T-1-t): the rounding start folded
into the thresholds), and for snnTorch `adapters.snntorch.BinaryFewSpikes`, the equivalent
constant-threshold form (the membrane doubles after each step instead of the threshold halving).
`fire` stays as the reference and the fast path; tests hold the three equal.

The price is latency: layers run one after another, so a decision takes T steps per layer (T to
integrate the observation, then T per spiking layer: 5 T for the Nature CNN), where a rate-coded
SNN's T counts steps of the whole network. float32 resolves integers up to 2**24, so bits beyond
about 20 carry rounding noise and only cost spikes; more than MAX_BITS are refused.
"""

from __future__ import annotations

import torch

from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.errors import ConfigError

MAX_BITS = 24  # float32's integer resolution


def check_bits(T: int) -> int:
    """T (bits per activation) must be at most MAX_BITS."""
    if T > MAX_BITS:
        raise ConfigError(f"T is the bits per level (binary and delta coding) and float32 resolves at most {MAX_BITS} bits, got T={T} "
                          "(T = 8 already matched the paper's T = 500 agreement on the fixture games)")
    return T


def integrate(current: torch.Tensor) -> torch.Tensor:
    """A membrane that doubles before each step's input: sum_t 2**(T-1-t) current[t] ([T, B, ...] -> [B, ...]).

    On CPU one C call where it can (`dqn2snn_plugin._native.fused_scan`, bit-identical); the loop is its reference.
    """
    fused = fused_scan.integrate(current)
    if fused is not None:
        return fused
    v = torch.zeros_like(current[0])
    for step in current:
        v.mul_(2).add_(step)
    return v


def fire(v: torch.Tensor, T: int, start: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Emit membrane `v` + `start` (least-significant-bit units) as T spikes, most significant first.

    Returns spikes [T, *v.shape] and the residual membrane. A membrane at or above 2**T - 1 sends
    all ones (saturation), one below 1 sends none: the rate is clip(floor(v), 0, 2**T - 1) / (2**T - 1).
    On CPU one C call where it can (`dqn2snn_plugin._native.fused_scan`, bit-identical); the loop is its reference.
    """
    fused = fused_scan.fire(v, T, start)
    if fused is not None:
        return fused
    v = v + start
    spikes = torch.empty((T, *v.shape), dtype=v.dtype, device=v.device)
    for t in range(T):
        threshold = float(2 ** (T - 1 - t))
        torch.ge(v, threshold, out=spikes[t])
        v.sub_(spikes[t], alpha=threshold)
    return spikes, v


def few_spike_table(T: int, initial_membrane: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`fire` as a few-spikes table (theta, h, d) over a gate in least-significant-bit units.

    Step t fires when gate - (spikes so far) >= theta_t = 2**(T-1-t) - V0 and subtracts
    h_t = 2**(T-1-t); its output weight d_t = 2**(T-1-t) / (2**T - 1) makes the summed output the
    rate n / (2**T - 1). float64, so that d is exact in a float64 network (thresholds are exact in any).
    """
    h = torch.tensor([2.0 ** (T - 1 - t) for t in range(check_bits(T))], dtype=torch.float64)
    return h - initial_membrane, h, h / (2**T - 1)
