"""Beyond the paper: make the SNN agree with its DQN at a few time steps, without retraining.

At small T the SNN's rates are quantised (about 1/T per neuron), a neuron starting at membrane 0
under-counts (its count is the floor of its integrated input), and activations above lambda saturate.
Q-value gaps of weak DQNs are smaller than these errors, so greedy actions flip. The remedies here:

- `calibrate_biases`: rate matching in the spirit of "SNN calibration" (Li et al., 2021): layer by
  layer, shift each channel's bias by the mean difference between the ANN's normalised activation
  (clipped to [0, 1]) and the SNN's measured firing rate on calibration states at the target T;
  finally shift each action's output bias by the mean Q-value error. Corrections are measured on
  the SNN as already corrected below, so errors do not compound.
- `tune`: try percentiles, initial membranes and bias calibration (and, with `distillation=True`,
  a distilled copy: see `dqn2snn_plugin.improve.distillation`); keep the option with the highest agreement
  on held-out calibration states (never on the test states), and report every option. With
  `coding="binary"` (T-bit spike codes, `dqn2snn_plugin.binary_coding`) no bias calibration is tried: rate
  matching is for rate-coded networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import torch

from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.improve.distillation import distill
from dqn2snn_plugin.errors import CalibrationError, ConfigError
from dqn2snn_plugin.normalization import layer_scales, record_activations
from dqn2snn_plugin.coding import Coding, check_coding, check_T
from dqn2snn_plugin.network import SpikingQNetwork

PERCENTILES: tuple[float | str, ...] = (99.0, 99.9, 99.99, "max")
INITS: tuple[str, ...] = ("zero", "half")


@torch.no_grad()
def calibrate_biases(
    snn: SpikingQNetwork, checkpoint: DQNCheckpoint, states, T: int, *, hidden: bool = True, output: bool = True,
    batch: int = 512,
) -> SpikingQNetwork:
    """Shift the biases of `snn` (in place) so its mean rates match the ANN's on `states` at T.

    `hidden`: per-channel shifts of the spiking layers; `output`: per-action shifts of the Q-values.
    """
    T = check_T(T)
    x = checkpoint.prepare(states)
    if len(x) == 0:
        raise CalibrationError("bias calibration needs at least one calibration state")
    activations, q = record_activations(checkpoint.q_network, x, batch)
    for layer, (acts, scale) in enumerate(zip(activations if hidden else [], snn.scales.hidden)):
        view = (1, -1) + (1,) * (acts.ndim - 2)
        target = (acts / scale.reshape(view).to(acts)).clamp(0, 1)
        target = target.transpose(0, 1).reshape(acts.shape[1], -1).mean(1)
        snn.readouts(x, T)
        measured = snn.last_stats.channel_rates(snn.channel_positions)[layer]
        snn.shift_bias(layer, target - measured.to(target))
    if output:
        values = snn.readouts(x, T)[snn.readout]
        snn.shift_bias(len(snn.synapses) - 1, (q - values).mean(0))
    return snn


def check_tuning(coding: Coding | str, bias_calibration=None) -> tuple[bool, ...]:
    """The bias-calibration settings `tune` tries (default: both where the coding allows it, else none), or
    ConfigError."""
    coding = check_coding(coding)
    if bias_calibration is None:
        bias_calibration = (False, True) if coding.bias_calibration else (False,)
    if not coding.bias_calibration and any(bias_calibration):
        raise ConfigError(f"bias calibration matches firing rates: it is for rate-coded networks, not {coding} coding")
    return tuple(bias_calibration)


@dataclass(frozen=True)
class TuningResult:
    """One option tried by `tune`, with its agreement on the validation states."""

    percentile: float | str
    initial_membrane: str
    bias_calibration: bool
    agreement: float
    distilled: bool = False
    coding: str = "rate"
    channel_wise: bool = False


def tune(
    checkpoint: DQNCheckpoint,
    calibration,
    T: int = 16,
    *,
    percentiles=PERCENTILES,
    inits=INITS,
    bias_calibration=None,
    validation_fraction: float = 0.25,
    backend: str = "spikingjelly",
    seed: int = 0,
    distillation: bool = False,
    distill_options: dict | None = None,
    coding: Coding | str = "rate",
    channel_wise: bool = False,
) -> SpikingQNetwork:
    """The converted network with the best options for T, chosen on part of the calibration states.

    The calibration states are split at random into a fitting part (scales, bias calibration,
    distillation) and a validation part (agreement with the DQN's greedy action, at T). With
    `distillation=True` a copy distilled for T (`distill(checkpoint, fit, T, **distill_options)`;
    minutes on a CPU) competes too. The returned network carries `tuning_report` (every option
    tried, best first) and `validation_agreement`; a distilled winner's weights are its
    `source_network` (what `store.save_snn` saves). `bias_calibration`: the settings to try, default
    (False, True), with a coding without bias calibration (binary) (False,). `channel_wise`: one scale per channel.
    """
    T = check_T(T)
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    bias_calibration = check_tuning(coding, bias_calibration)
    states = np.asarray(calibration) if not isinstance(calibration, torch.Tensor) else calibration
    if len(states) < 8:
        raise CalibrationError(f"tune needs at least 8 calibration states, got {len(states)}")
    order = np.random.default_rng(seed).permutation(len(states))
    n_val = max(1, int(len(states) * validation_fraction))
    fit, val = states[np.sort(order[n_val:])], states[np.sort(order[:n_val])]
    fit_x = checkpoint.prepare(fit)
    val_actions = checkpoint.act(val)
    report, best = [], None
    for p in percentiles:
        scales = layer_scales(checkpoint.q_network, fit_x, p, channel_wise=channel_wise)
        for init, calibrate in product(inits, bias_calibration):
            snn = convert(checkpoint, None, scales=scales, initial_membrane=init, backend=backend, T=T, coding=coding)
            if calibrate:
                calibrate_biases(snn, checkpoint, fit, T)
            rate = float((snn.act(val, T) == val_actions).float().mean())
            report.append(TuningResult(p, init, calibrate, rate, coding=coding, channel_wise=channel_wise))
            if best is None or rate > best[0]:
                best = (rate, snn)
    if distillation:
        result = distill(checkpoint, fit, T, coding=coding, **(distill_options or {}))
        snn = result.to_snn(backend)
        rate = float((snn.act(val, T) == val_actions).float().mean())
        report.append(TuningResult(result.scales.percentile, "half", False, rate, distilled=True, coding=coding,
                                   channel_wise=result.scales.channel_wise))
        if rate > best[0]:
            best = (rate, snn)
    chosen = best[1]
    chosen.tuning_report = sorted(report, key=lambda r: -r.agreement)
    chosen.validation_agreement = best[0]
    return chosen


def cheapest_T(
    checkpoint: DQNCheckpoint, calibration, target: float, Ts=None, **options
) -> SpikingQNetwork:
    """`tune` at each T in turn; return the first network whose validation agreement reaches `target`
    (or the best one seen, with `reached_target = False`). `Ts`: default the coding's `search_Ts`
    (rate coding: 4, 8, 16, 32, 64, 128)."""
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"target agreement must be in (0, 1], got {target}")
    coding = check_coding(options.get("coding", "rate"))
    best = None
    for T in sorted(coding.check_T(t) for t in (coding.search_Ts if Ts is None else Ts)):
        snn = tune(checkpoint, calibration, T, **options)
        snn.reached_target = snn.validation_agreement >= target
        if snn.reached_target:
            return snn
        if best is None or snn.validation_agreement > best.validation_agreement:
            best = snn
    return best
