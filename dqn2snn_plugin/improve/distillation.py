"""Quantisation-aware distillation: a copy of the DQN whose ReLUs already count in 1/L steps (QCFS).

At T time steps an IF neuron can only express rates in steps of 1/T, starting from V0 = threshold/2
it rounds to the nearest step, and it saturates at one spike per step. QCFS (Bu et al., ICLR 2022)
builds exactly that into the ANN: every ReLU becomes a clip-floor-shift activation

    h(x) = lambda * clip(floor(x * L / lambda + 1/2) / L, 0, 1)

with a trainable threshold lambda per channel (or per layer). `distill` fine-tunes such a copy of the user's DQN to
reproduce the DQN's Q-values on the collected states (no environment, no rewards: the DQN is the
teacher), then `convert` turns the copy into an SNN with lambda as the layer scales and a
half-threshold initial membrane; at T = L its first layer is exact and deeper layers nearly so.

Then, optionally, the copy is fine-tuned *as the SNN*: the forward pass simulates the IF neurons
for T steps (so the loss sees the SNN's exact readout at T, timing errors of deeper layers
included) while the gradient flows through the clip-floor-shift activations (a straight-through
estimate: forward values are the SNN's rates, backward is the QCFS copy's). This closes most of the
remaining gap between the quantised copy and its SNN.

With `coding="binary"` the copy gets 2**T - 1 levels and `to_snn` sends them as T-bit spike codes
(`dqn2snn_plugin.binary_coding`); that SNN computes the copy exactly, so there is no SNN phase.

The result is still a conversion of the user's DQN: report its agreement with the original DQN
(`metrics.agreement(checkpoint, snn, ...)`), not with the fine-tuned copy.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import convert
from dqn2snn_plugin.errors import CalibrationError, ConfigError
from dqn2snn_plugin.normalization import LayerScales, check_scale, layer_scales, percentile_scale
from dqn2snn_plugin.coding import Coding, check_coding
from dqn2snn_plugin.engine.rate import if_scan
from dqn2snn_plugin.network import SpikingQNetwork


WARMUP_STEPS = 50  # optimiser steps of linear learning-rate warm-up at the start of each phase


class ClipFloorShift(nn.Module):
    """QCFS activation with L levels and a trainable threshold (one, or one per channel: `threshold`
    of shape [C]); floor's gradient passes straight through."""

    def __init__(self, threshold: torch.Tensor | float, levels: int) -> None:
        super().__init__()
        self.threshold = nn.Parameter(torch.as_tensor(threshold, dtype=torch.float32).detach().clone())
        self.levels = levels

    def positive_threshold(self) -> torch.Tensor:
        """|threshold|, at least 1e-6: training may push a rarely active channel's threshold to 0 or below."""
        return self.threshold.abs().clamp_min(1e-6)

    def lam(self, x: torch.Tensor) -> torch.Tensor:
        """The positive threshold, shaped to broadcast over `x` ([B, C, ...] or [B, F])."""
        threshold = self.positive_threshold()
        return threshold if threshold.ndim == 0 else threshold.view(1, -1, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.lam(x)
        y = (x / lam).clamp(0, 1)
        quantised = torch.floor(y * self.levels + 0.5) / self.levels
        return (y + (quantised - y).detach()) * lam


@dataclass(frozen=True)
class DistillationResult:
    """The fine-tuned copy (ReLU layout; `to_snn()` converts it), the same copy with its
    clip-floor-shift activations, and the training log (one row per epoch)."""

    checkpoint: DQNCheckpoint
    quantised: nn.Sequential
    scales: LayerScales
    T: int
    history: list[dict]
    coding: str = "rate"

    def to_snn(self, backend: str = "spikingjelly") -> SpikingQNetwork:
        """The spiking network the copy was trained for: its thresholds as scales, half-threshold start, T."""
        return convert(self.checkpoint, None, scales=self.scales, initial_membrane="half", backend=backend, T=self.T,
                       coding=self.coding)


def quantised_copy(network: nn.Sequential, thresholds, levels: int) -> nn.Sequential:
    """A copy of `network` with its i-th ReLU replaced by ClipFloorShift(thresholds[i], levels)."""
    layers, index = [], 0
    for layer in copy.deepcopy(network):
        if isinstance(layer, nn.ReLU):
            layers.append(ClipFloorShift(thresholds[index], levels))
            index += 1
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


def relu_copy(quantised: nn.Sequential) -> tuple[nn.Sequential, tuple[torch.Tensor, ...]]:
    """Back to Conv/Linear/ReLU (what `convert` takes) plus the trained thresholds."""
    layers, thresholds = [], []
    for layer in quantised:
        if isinstance(layer, ClipFloorShift):
            layers.append(nn.ReLU())
            thresholds.append(layer.positive_threshold().detach().clone())
        else:
            layers.append(copy.deepcopy(layer))
    return nn.Sequential(*layers).requires_grad_(False), tuple(thresholds)


class DistillationLoss:
    """Q-value matching that weighs what decides the action.

    A DQN's Q-values vary far more between states (the state value V = mean over actions) than
    between the actions of one state (the advantages A = Q - V; on our fixtures about 50x less), and
    only A decides the greedy action. So the loss is the squared error of A in units of A's spread,
    plus that of V in units of V's spread, plus the KL divergence between the softmax policies at a
    temperature of the median gap between the best two Q-values (the ranking of close actions).
    With `margin` > 0 it adds, times `margin`, a hinge on the DQN's greedy action: the copy's best
    other action must stay below it by half the DQN's own gap (in units of the temperature).
    """

    def __init__(self, teacher_q: torch.Tensor, temperature: float | None = None, margin: float = 0.0) -> None:
        self.margin = margin
        value = teacher_q.mean(1, keepdim=True)
        self.advantage_scale = (teacher_q - value).std().clamp_min(1e-8)
        self.value_scale = value.std().clamp_min(1e-8)
        top2 = teacher_q.topk(2, dim=1).values if teacher_q.shape[1] > 1 else teacher_q.repeat(1, 2)
        self.temperature = float(temperature or (top2[:, 0] - top2[:, 1]).median().clamp_min(1e-6))

    def __call__(self, q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value, target_value = q.mean(1, keepdim=True), target.mean(1, keepdim=True)
        advantage = F.mse_loss(q - value, target - target_value) / self.advantage_scale**2
        state_value = F.mse_loss(value, target_value) / self.value_scale**2
        policy = F.kl_div(F.log_softmax(q / self.temperature, 1), F.log_softmax(target / self.temperature, 1),
                          log_target=True, reduction="batchmean")
        if not self.margin or q.shape[1] < 2:
            return advantage + state_value + policy
        top2 = target.topk(2, dim=1)
        greedy = top2.indices[:, :1]
        others = q.scatter(1, greedy, float("-inf")).amax(1)
        gap = top2.values[:, 0] - top2.values[:, 1]
        hinge = F.relu(others - q.gather(1, greedy)[:, 0] + gap / 2) / self.temperature
        return advantage + state_value + policy + self.margin * hinge.mean()


def spiking_forward(student: nn.Sequential, x: torch.Tensor, T: int) -> torch.Tensor:
    """Q-values of the SNN made from `student` (half-threshold start), with QCFS gradients.

    Each activation's forward value is lambda times the IF layer's firing rate over T steps, computed
    from the previous layer's actual spike trains; its gradient is that of ClipFloorShift. The
    output is the integrated output current / T: the "spikes+membrane" readout of `convert`.
    """
    a, spikes = x, None  # a: rate-valued activations (with grad); spikes: [T, B, ...] of the last layer
    previous: ClipFloorShift | None = None  # the activation that made `spikes` (set once spikes exist)
    stage: list[nn.Module] = []
    for layer in student:
        if not isinstance(layer, ClipFloorShift):
            stage.append(layer)
            continue
        block = nn.Sequential(*stage)
        pre = block(a)
        with torch.no_grad():
            lam = layer.lam(pre)
            if spikes is None:  # analog input: the same current at every step
                current = (pre / lam).expand(T, *pre.shape)
            else:
                inputs = spikes.flatten(0, 1)
                current = block(inputs * previous.lam(inputs)).unflatten(0, spikes.shape[:2]) / lam
            spikes, _ = if_scan(current, torch.full_like(current[0], 0.5))
            rate = spikes.mean(0) * lam
        quantised = layer(pre)
        a = quantised + (rate - quantised).detach()
        previous, stage = layer, []
    return nn.Sequential(*stage)(a)


def distill(
    checkpoint: DQNCheckpoint,
    calibration,
    T: int = 16,
    *,
    epochs: int = 6,
    snn_epochs: int = 4,
    batch_size: int = 32,
    lr: float = 1e-3,
    temperature: float | None = None,
    validation_fraction: float = 0.1,
    percentile: float = 99.9,
    channel_wise: bool = True,
    seed: int = 0,
    margin: float = 3.0,
    coding: Coding | str = "rate",
) -> DistillationResult:
    """Fine-tune a copy of the DQN on `calibration` states so that its SNN at T agrees with the DQN.

    `calibration`: raw observations (numpy array or tensor, [N, *observation_shape]), e.g. from
    `collect_observations`; 15,000-20,000 states are what docs/results.md measured with.
    `epochs` of quantisation-aware training (clip-floor-shift with L = T levels), then `snn_epochs`
    with the simulated SNN in the forward pass (see `spiking_forward`), both with `DistillationLoss`
    (`temperature`: its policy temperature; default the median gap between the best two Q-values;
    `margin`: the weight of its hinge on the DQN's greedy action, 0 for none). The hinge and the
    smaller batches (4x the optimiser steps) raised the agreement at T = 16 on all six fixture games,
    by 1.3 (Breakout, to 97.5%) to 9.9 points (BeamRider, to 91.4%); 15,000 states, docs/results.md.
    `lr`: Adam's step size relative to each weight tensor's mean magnitude (1e-3: 0.1% per step).
    `percentile`, `channel_wise`: the starting thresholds (`layer_scales`), trained from there; one
    threshold per channel (default) agreed 3-4 points better than one per layer at T = 16 (Breakout
    95.4% vs 91.2%, Pong 87.0% vs 84.2%; 15,000 states, 4 + 2 epochs, CPU).
    The copy with the best agreement on the held-out `validation_fraction` of the states (judged as
    the QCFS copy in the first phase, as the SNN in the second) is kept; the starting copy counts.
    Runs on the device of `checkpoint` (see `load_dqn(..., device=)`).
    `coding="binary"`: a copy with 2**T - 1 levels for T-bit spike codes, no SNN phase (see the module doc).
    """
    coding = check_coding(coding)
    T = coding.check_T(T)
    levels = coding.levels(T)
    if (epochs < 0 or snn_epochs < 0 or batch_size < 1 or lr <= 0 or margin < 0
            or not 0.0 < validation_fraction < 1.0):
        raise ConfigError("distill needs epochs >= 0, snn_epochs >= 0, batch_size >= 1, lr > 0, margin >= 0 and "
                          "validation_fraction in (0, 1)")
    raw = torch.as_tensor(np.asarray(calibration))
    if len(raw) < 16:
        raise CalibrationError(f"distillation needs at least 16 calibration states, got {len(raw)}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(raw), generator=generator)
    n_val = max(1, int(len(raw) * validation_fraction))
    val_raw, fit_raw = raw[order[:n_val]], raw[order[n_val:]]
    teacher = checkpoint.q_network.eval()

    def batched(network_fn, states: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([network_fn(checkpoint.prepare(states[i : i + 256])) for i in range(0, len(states), 256)])

    fit_q, val_actions = batched(teacher, fit_raw), batched(teacher, val_raw).argmax(1)
    loss_fn = DistillationLoss(fit_q, temperature, margin)
    start = layer_scales(teacher, checkpoint.prepare(fit_raw[:4096]), percentile, channel_wise=channel_wise)
    student = quantised_copy(teacher, start.hidden, levels).train()
    # Adam's step is about lr for every parameter whatever its size; the first layer's weights carry
    # SB3's 1/255 and are ~100x smaller than the rest, and the actions' Q-values differ by ~0.5%, so
    # one absolute step can flip most greedy actions. Each tensor's step is therefore relative to its size.
    groups = [{"params": [p], "scale": float(p.detach().abs().mean().clamp_min(1e-12))} for p in student.parameters()]
    optimiser = torch.optim.Adam(groups, lr=lr)

    def agreement_of(forward) -> float:
        return float((batched(forward, val_raw).argmax(1) == val_actions).float().mean())

    history: list[dict] = []

    def run_phase(phase: str, forward, n_epochs: int) -> None:
        """Train `n_epochs` through `forward` (linear warm-up, then cosine decay to 0); keep the state with the
        best validation agreement (the starting state included)."""
        best = (agreement_of(forward), copy.deepcopy(student.state_dict()))
        history.append({"phase": phase, "epoch": 0, "loss": None, "validation_agreement": best[0]})
        steps, step = n_epochs * math.ceil(len(fit_raw) / batch_size), 0
        for epoch in range(1, n_epochs + 1):
            total = 0.0
            for batch in torch.randperm(len(fit_raw), generator=generator).split(batch_size):
                schedule = min(1.0, (step + 1) / WARMUP_STEPS) * 0.5 * (1.0 + math.cos(math.pi * step / steps))
                for group in optimiser.param_groups:
                    group["lr"] = lr * group["scale"] * schedule
                step += 1
                target = fit_q[batch]
                q = forward(checkpoint.prepare(fit_raw[batch]))
                loss = loss_fn(q, target)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(batch)
            rate = agreement_of(forward)
            history.append({"phase": phase, "epoch": epoch, "loss": total / len(fit_raw), "validation_agreement": rate})
            if rate > best[0]:
                best = (rate, copy.deepcopy(student.state_dict()))
        student.load_state_dict(best[1])

    run_phase("qcfs", student, epochs)
    if snn_epochs and coding.snn_training:
        run_phase("snn", lambda x: spiking_forward(student, x, T), snn_epochs)
    network, thresholds = relu_copy(student.eval())
    for index, threshold in enumerate(thresholds):
        check_scale(threshold, f"distilled layer {index} threshold")
    # the spike-count readout's output scale, from the Q-values the SNN approximates (the QCFS copy's)
    output = float(percentile_scale(batched(student, fit_raw[:4096]).abs(), percentile, "all", channel_wise=False))
    scales = LayerScales(thresholds, output, f"distilled T={T}{coding.label}", "nonzero",
                         channel_wise, len(fit_raw))
    distilled = dataclasses.replace(checkpoint, q_network=network, source=f"{checkpoint.source} (distilled for T={T})")
    return DistillationResult(distilled, student.requires_grad_(False), scales, T, history, coding)
