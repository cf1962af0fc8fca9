"""Delta coding's schedule: each neuron keeps its state from the previous observation of the same episode
and sends only the change of its quantised activation, as one graded event (O'Connor & Welling 2016's
sigma-delta neurons; Loihi 2's graded spikes).

The network is binary coding's quantised network (`dqn2snn_plugin.binary_coding`; 2**T - 1 levels, T the
bits): a neuron's level is q = clip(floor(V + start), 0, L), L = 2**T - 1, where V is its membrane in
level units (the folded weighted sum of the levels below, plus L times the folded bias) and start the
network's initial membrane (1/2: rounding). A binary-coded decision computes V afresh from T-bit spike
codes; here each neuron keeps V and its last sent level, so a decision is:

- the first stage's membranes add the weights of every observation value that changed, times the change
  (V_1 += L W_1 (x - x_prev));
- each spiking layer quantises again, q = clip(floor(V + start), 0, L), and sends Δq = q - q_prev where it is
  not zero: one graded event per changed neuron, carrying the signed integer change; the next layer's
  membranes add W Δq (V_{l+1} += W_{l+1} Δq); the output layer's membrane / L is the Q-value.

Each layer (requantisation, counts, and its events added into the next layer's membranes, a convolution's at
the reached positions only) is one C call (`_native.fused_scan.delta_layer`); where more than
`SimulationOptions.sparse_changes` of a layer's inputs changed, or without the C library, a dense pass of
the changes through a bias-free float64 copy of the stage instead (the same sums: see below). The
observation's changes into a convolution are one C call too (`fused_scan.delta_input`: the check, the
changes and their events read straight from the observation and the previous one, no float64 change
tensor). A fully connected stage's events read its weights as int32 whole numbers of its grid unit where
they fit (`DeltaNetwork.whole`): the same products, from half the memory that sets that stage's speed.

So V_{l+1} = W_{l+1} q_l + L b_{l+1} holds after every decision: the levels are those of a quantised network
run on that observation alone, whatever the earlier observations were (the state only saves work).

Graded events rather than binary spikes: a change Δq sent as binary spikes (+-2**k, one per one-bit of
|Δq|, each an addition at every target) costs popcount(|Δq|) events where a graded event costs one
multiply-accumulate; `SimulationStats.binary_spikes` counts that alternative, and
`benchmarks/simulation_speed.py` reports both. Graded events also keep a decision one step per layer.

Exactness. Accumulating changes in floating point would drift from a fresh run by rounding. Instead the
delta network rounds each folded stage's weights and bias to a power-of-two grid 2**-g (`rounded`), with
g = SUM_BITS - ceil(log2 bound), bound the largest magnitude any membrane or partial sum of a decision can
reach: every product (weight x whole-number change) and every sum is then a whole multiple of 2**-g below
2**51 in magnitude, so float64 adds them exactly, in any order, event-driven or dense, batched or not. Each
decision therefore equals, neuron for neuron, the quantised network with the rounded weights computed any
way in float64 (binary coding's on a float64 copy with those weights too); tests/test_delta.py checks it on
300 consecutive states of the shipped Breakout DQN's play. The rounding moves a weight by at most
2**-(g+1): for that DQN at T = 8 (per-channel scales, p = 99.99) by at most 1.2e-7 (fc1, weights up to
12.4; 3e-8 and 1.5e-8 in conv2 and conv3, below 1e-10 in conv1 and the output), and the float32
binary-coded SNN takes the same action on at least 99% of those states (the test's bound; 100% measured).
Exact for observations of whole numbers of magnitude at most `X_MAX` (image frames, MinAtar planes); other
observations (classic control's floats) refresh the first stage densely from the observation at each
decision (no first-stage events), so its membranes match another float64 computation to rounding only.

The state of a row, as `engine.run` carries it ([B, ...] each): the last observation (in the network's
dtype), then (membrane, level) of each spiking layer and the output membranes (float64). A fresh row is the
network's state after a blank (all-zero) observation (`fresh_state`: computed once per network and T), so
the first decision of an episode is events too: the observation's nonzero values are its changes. The state
is for the network's T: a call at another T runs from fresh rows and keeps nothing.
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.engine import READOUTS
from dqn2snn_plugin.engine.events import SimulationOptions, event_layer
from dqn2snn_plugin.engine.stats import ChangeCounts, Counts, fan_out, weighted
from dqn2snn_plugin.errors import ConfigError

if TYPE_CHECKING:
    from dqn2snn_plugin.engine import Engine
    from dqn2snn_plugin.network import SpikingQNetwork

X_MAX = 255  # observations of whole numbers up to this magnitude take the exact event-driven first stage
SUM_BITS = 51  # every membrane and partial sum stays below 2**SUM_BITS grid units (float64 holds 2**53 exactly)


def rounded(net: SpikingQNetwork, T: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each folded stage's (weight, bias) in float64, rounded to the stage's grid 2**-g (see the module doc)."""
    return [(w, b) for w, b, _ in on_grid(net, T)]


def on_grid(net: SpikingQNetwork, T: int) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Each folded stage's (weight, bias) in float64, rounded to the stage's grid 2**-g, and 2**g.

    g is the largest integer with L * (sum_j |W_ij| m + |b_i|) * 2**g <= 2**SUM_BITS for every output i,
    m the largest input magnitude (`X_MAX` for the observation, L = 2**T - 1 for a layer's levels): the
    bound of every membrane and every partial sum of a decision in level units. A missing bias is zeros.
    """
    levels = 2**T - 1
    out = []
    for index, stage in enumerate(net.synapses):
        layer = weighted(stage)
        w = layer.weight.detach().to("cpu", torch.float64)
        b = torch.zeros(w.shape[0], dtype=torch.float64) if layer.bias is None else layer.bias.detach().to("cpu", torch.float64)
        largest_input = X_MAX if index == 0 else levels
        bound = float((levels * (w.abs().flatten(1).sum(1) * largest_input + b.abs())).max())
        grid = SUM_BITS - (math.frexp(bound)[1] if bound > 0 else 0)  # bound < 2**frexp exponent
        step = 2.0**grid
        out.append((torch.round(w * step) / step, torch.round(b * step) / step, step))
    return out


class DeltaNetwork:
    """One network at one T ready for delta decisions: the rounded stages as float64 bias-free copies (in
    level units: the first stage's weights times L), their biases times L, the first stage's fan-out, the
    blank state. Made by `DeltaSchedule.prepared`, kept until a weight changes."""

    def __init__(self, net: SpikingQNetwork, T: int) -> None:
        self.levels, self.start = float(2**T - 1), net.initial_membrane
        device = weighted(net.synapses[0]).weight.device
        self.stages, self.layers, self.weights_t, self.biases, self.whole = [], [], [], [], []
        for index, (stage, (w, b, step)) in enumerate(zip(net.synapses, on_grid(net, T))):
            stage = copy.deepcopy(stage).to(device=device, dtype=torch.float64)
            layer = weighted(stage)
            layer.weight = nn.Parameter((w * self.levels if index == 0 else w).to(device), requires_grad=False)
            layer.bias = None  # a change carries no bias: biases enter the blank state once
            self.stages.append(stage)
            self.layers.append(event_layer(stage))
            self.weights_t.append(layer.weight.permute(*range(1, w.ndim), 0).contiguous())
            self.biases.append((b * self.levels).to(device).reshape(-1, *[1] * (w.ndim - 2)))
            self.whole.append(self._whole(w * step, 1 / step) if isinstance(layer, nn.Linear) and index else None)
        shape = tuple(net.observation_shape)
        self.input_fan = fan_out(net.synapses[0], shape).to(device=device, dtype=torch.float64)
        self.blank = self._blank(shape, device, weighted(net.synapses[0]).weight.dtype)

    @staticmethod
    def _whole(grid_units: torch.Tensor, unit: float) -> tuple[torch.Tensor, float] | None:
        """A fully connected stage's weights as whole numbers of grid units, int32 [in, out] (`events`' layout),
        and the unit: half the float64 weights' memory traffic, which sets an event-driven Linear's speed, with
        the same products (a change times the unit, times the whole number: exact). None where one does not
        fit an int32 (then the float64 weights)."""
        if grid_units.numel() and float(grid_units.abs().max()) >= 2**31:
            return None
        return grid_units.to(torch.int32).t().contiguous(), unit

    def _blank(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """The state after an all-zero observation, one row: dense passes from the biases."""
        with torch.no_grad():
            state = [torch.zeros((1, *shape), dtype=dtype, device=device)]  # the observation in the network's dtype
            v = self.stages[0](state[0].to(torch.float64)) + self.biases[0]
            for stage, bias in zip(self.stages[1:], self.biases[1:]):
                q = self.quantised(v)
                state += [v, q]
                v = stage(q) + bias
            return [*state, v]

    def quantised(self, v: torch.Tensor) -> torch.Tensor:
        """The levels of membranes `v`: clip(floor(v + start), 0, L)."""
        return (v + self.start).floor_().clamp_(0.0, self.levels)

    def step(self, index: int, change: torch.Tensor, fan: torch.Tensor, counts: Counts, into: int | None,
             membrane: torch.Tensor, options: SimulationOptions, v: torch.Tensor | None = None,
             level: torch.Tensor | None = None) -> torch.Tensor:
        """One layer's changes, counted and sent: stage `index`'s membranes after them. With `v`, `level`
        becomes v's levels and `change` the new levels less the old (in place); then `into` (a spiking layer's
        number; None: the observation) gains the events, their fan-outs `fan` and bits, stage `index` the
        neurons its events reach, and `membrane` gains W `change` (in place, event by event, where few
        changed; else a new tensor from a dense pass), which is returned.
        One C call where usable (`fused_scan.delta_layer`), else these tensor operations, equal to the bit."""
        changes = counts.changes
        totals, ops = (counts.totals[into], counts.synaptic_ops) if into is not None else (
            changes.input_events, changes.input_synaptic_ops)
        channels, bits = (counts.channels[into], changes.binary_spikes[into]) if into is not None else (None, None)
        touched, layer = changes.neuron_updates[index], self.layers[index]
        following = membrane
        done = fused_scan.delta_layer(v, self.start, self.levels, level, change, fan, totals, channels, ops, bits,
                                      layer or weighted(self.stages[index]), touched,
                                      None if layer is None else self.weights_t[index],
                                      None if layer is None else following, options.sparse_changes,
                                      self.whole[index])
        if done:
            return following
        if done is None:
            self.account(index, change, fan, totals, channels, ops, bits, touched, v, level)
        return following + self.stages[index](change) if bool(totals.any()) else following

    def account(self, index: int, change: torch.Tensor, fan: torch.Tensor, totals: torch.Tensor,
                channels: torch.Tensor | None, ops: torch.Tensor, bits: torch.Tensor | None, touched: torch.Tensor,
                v: torch.Tensor | None, level: torch.Tensor | None) -> None:
        """`step`'s requantisation and counts by tensor operations (the reference of `fused_scan.delta_layer`)."""
        if v is not None:
            q = self.quantised(v)
            change.copy_(q - level)
            level.copy_(q)
        changed = change != 0
        totals += changed.flatten(1).sum(1)
        ops += (changed * fan).flatten(1).sum(1)
        if channels is not None:
            channels += changed.sum(0).flatten(1).sum(1) if changed.ndim > 2 else changed.sum(0)
            ones = np.bitwise_count(change.abs().to(torch.int64).cpu().numpy()).reshape(change.shape[0], -1).sum(1)
            bits += torch.from_numpy(ones).to(bits)
        layer = weighted(self.stages[index])
        if isinstance(layer, nn.Conv2d):  # the output positions whose window holds an event, every channel there
            anywhere = changed.any(1, keepdim=True).to(torch.float64)
            window = torch.ones((1, 1, *layer.kernel_size), dtype=torch.float64, device=changed.device)
            hit = F.conv2d(anywhere, window, stride=layer.stride, padding=layer.padding) > 0
            touched += hit.flatten(1).sum(1) * layer.out_channels
        else:  # a dense layer: every neuron, where any input changed
            touched += changed.flatten(1).any(1) * layer.out_features


def _exact_input(x: torch.Tensor) -> bool:
    """Whether observations `x` are whole numbers of magnitude at most X_MAX (the exact first stage)."""
    if not x.numel():
        return True
    fractional = fused_scan.fractional(x)
    if fractional is None:
        fractional = bool((x != x.round()).any())
    low, high = torch.aminmax(x)
    return not fractional and -X_MAX <= float(low) and float(high) <= X_MAX


class DeltaSchedule:
    """The delta-coded simulation of a `SpikingQNetwork` (see the module doc)."""

    def __init__(self) -> None:
        # per network: {T: (the weights' identity, its DeltaNetwork)}
        self._prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def steps_held(self, Ts: list[int], batch: int, options: SimulationOptions, device: torch.device) -> int:
        """A decision holds one step of every layer (its membranes and levels)."""
        return 2

    def prepared(self, net: SpikingQNetwork, T: int) -> DeltaNetwork:
        """`net`'s DeltaNetwork at T, made again when a weight or bias changed (in place, or moved)."""
        layers = [weighted(stage) for stage in net.synapses]
        key = (T, net.initial_membrane, tuple((p.data_ptr(), p._version, p.dtype, p.device)
                                              for layer in layers for p in (layer.weight, layer.bias) if p is not None))
        per_T = self._prepared.setdefault(net, {})
        if T not in per_T or per_T[T][0] != key:
            per_T[T] = (key, DeltaNetwork(net, T))
        return per_T[T][1]

    def fresh_state(self, net: SpikingQNetwork, batch: int) -> list[torch.Tensor]:
        """`batch` reset rows at the network's T: its state after a blank observation."""
        blank = self.prepared(net, net.T).blank
        return [v.expand(batch, *v.shape[1:]) for v in blank]

    def simulate(self, engine: Engine, net: SpikingQNetwork, x: torch.Tensor, Ts: list[int], block: int,
                 state: list[torch.Tensor] | None):
        """One batch chunk at each T from `state` (None: fresh rows): (readouts per T, final state, counts),
        the last two of the largest T."""
        if state is not None and Ts != [net.T]:
            raise ConfigError(f"delta coding carries state at the network's T = {net.T}, asked for T = {Ts}: "
                              "call reset_state() or leave T out")
        results = {}
        for T in Ts:
            delta = self.prepared(net, T)
            start = state if state is not None else [v.expand(x.shape[0], *v.shape[1:]).clone(memory_format=torch.contiguous_format)
                                                     for v in delta.blank]  # its own: updated in place
            q, final, counts = self.decide(engine, delta, x, start)
            results[T] = dict.fromkeys(READOUTS, q.to(x.dtype))  # the output layer only integrates: one readout
        return results, final, counts

    @staticmethod
    def decide(engine: Engine, delta: DeltaNetwork, x: torch.Tensor, state: list[torch.Tensor]):
        """One decision on observations `x` from `state` (contiguous; its membranes and levels are updated in
        place, saving a copy of each: the network drops a state that an error interrupted): (Q-values
        [B, n_actions] in float64, new state, counts)."""
        options, batch = engine.options, x.shape[0]
        previous, membranes, levels = state[0], state[1::2], state[2::2]
        layers = len(levels)

        rows = list(torch.zeros((4 * layers + 4, batch), dtype=torch.float64, device=x.device))  # one allocation
        channels = list(torch.zeros(sum(f.shape[0] for f in engine.counter.fan_outs), dtype=torch.float64,
                                    device=x.device).split([f.shape[0] for f in engine.counter.fan_outs]))
        counts = Counts(rows[:layers], rows[layers], channels, ChangeCounts(
            rows[layers + 1], rows[layers + 2], rows[layers + 3 : 2 * layers + 4], rows[2 * layers + 4 :]))
        changes = counts.changes
        if delta.layers[0] is not None and fused_scan.delta_input(
                x, previous, X_MAX, delta.input_fan, changes.input_events, changes.input_synaptic_ops, delta.layers[0],
                delta.weights_t[0], changes.neuron_updates[0], membranes[0], options.sparse_changes):
            v, x = membranes[0], previous  # sent from the observations in one C call; `previous` now holds x
        elif _exact_input(x):  # whole numbers: their differences are exact in any float dtype
            x = x.clone()  # kept as the next decision's previous observation, in the network's dtype
            v = delta.step(0, (x - previous).to(torch.float64), delta.input_fan, counts, None, membranes[0], options)
        else:  # not exact as changes: the first stage afresh from the observation, every value an event
            x = x.clone()
            v = delta.stages[0](x.to(torch.float64)) + delta.biases[0]
            changes.input_events.fill_(float(x[0].numel()))
            changes.input_synaptic_ops.fill_(float(delta.input_fan.sum()))
            changes.neuron_updates[0].fill_(float(v[0].numel()))
        new_state = [x]
        for index, (membrane, level) in enumerate(zip(membranes[1:], levels), start=1):
            change = torch.empty_like(v)
            following = delta.step(index, change, engine.counter.fan(index - 1, change), counts, index - 1, membrane,
                                   options, v, level)
            new_state += [v, level]
            v = following
        new_state.append(v)
        return v / delta.levels, new_state, counts


SCHEDULE = DeltaSchedule()
