"""The spiking Q-network: integrate-and-fire layers simulated for T time steps per decision.

Every hidden ReLU of the DQN becomes a layer of integrate-and-fire neurons (threshold 1, reset by
subtraction, no leak), with the layer scales folded into the weights (W_l * lambda_{l-1} / lambda_l,
b_l / lambda_l). The neurons themselves come from a framework backend (SpikingJelly or snnTorch, see
`dqn2snn_plugin.adapters`); this module only schedules them.

Simulation is layer by layer over all T steps at once ("multi-step"): each synaptic layer runs one
batched pass over [T*B] inputs, each neuron layer one scan over T. With the paper's analog input
(the observation injected at every step) the first layer's current is the same at every step, so it
is computed once. Spikes equal those of step-by-step simulation (a test checks it).
On CPU the synaptic layers are event-driven where few neurons fire: each spike adds its weight
column to its targets (`fused_scan.events`), so a layer costs its spike count, not its size; the
currents then differ from a dense pass by rounding only.

Readouts, all in Q-value units so they compare with the DQN (ties: lowest action index, as
`torch.argmax` everywhere in this package):
- "spikes": output spike count N * lambda_out / T (output neurons fire on Q / lambda_out).
- "spikes+membrane": (N + V_T) * lambda_out / T, the paper's "robust firing rate".
- "membrane": a non-spiking integrating output, the mean output current (sum_t I_t / T).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin import binary_coding
from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.errors import ConfigError, ObservationError
from dqn2snn_plugin.normalization import LayerScales
from dqn2snn_plugin.observations import observation_batch

Readout = Literal["spikes", "spikes+membrane", "membrane"]
READOUTS: tuple[str, ...] = ("spikes", "spikes+membrane", "membrane")
InputCoding = Literal["analog", "poisson"]
Coding = Literal["rate", "binary"]
CODINGS: tuple[str, ...] = ("rate", "binary")


class NeuronBackend(Protocol):
    """What a framework adapter provides: its IF neurons and a way to run them over a sequence.

    Optional, to let a layer run as one C call: `scan_threshold(neuron, current) -> float | None`, the
    threshold where `run(neuron, current, v)` is exactly `if_scan(current, v, threshold)`
    (`fused_scan.rate_layer`), and `binary_start(neuron, v) -> float | None`, the rounding start where
    `fire_binary(neuron, v)` is exactly `binary_coding.fire(v, bits, start)` (`fused_scan.binary_layer`).
    Backends without them always get the separate steps.
    """

    name: str

    def make_neuron(self, initial_membrane: float) -> nn.Module:
        """One IF layer (threshold 1, subtractive reset) whose membrane starts at `initial_membrane`."""

    def run(self, neuron: nn.Module, current: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate `current` [T, B, ...] from membrane `v` [B, ...]; return spikes [T, B, ...] and final v."""

    def make_binary_neuron(self, bits: int, initial_membrane: float) -> nn.Module:
        """One binary-coding layer: sends `bits`-bit codes, starting at `initial_membrane` (least significant bits)."""

    def fire_binary(self, neuron: nn.Module, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Send gate `v` [B, ...] as a binary code: spikes [T, B, ...] and residual, as `binary_coding.fire`."""


@dataclass
class SimulationStats:
    """What the last call did: spikes per layer and sample, firing rates, synaptic operations."""

    T: int
    spikes: list[torch.Tensor] = field(default_factory=list)  # per layer: [B] spike totals over T
    neurons: list[int] = field(default_factory=list)  # per layer: number of neurons
    synaptic_ops: torch.Tensor | None = None  # [B] spikes times fan-out, summed over layers
    channel_spikes: list[torch.Tensor] = field(default_factory=list)  # per layer: [C] totals over B, space, T

    def channel_rates(self, positions: list[int]) -> list[torch.Tensor]:
        """Mean spikes per neuron per step of each channel ([C] per layer); `positions` = neurons per channel."""
        batch = self.spikes[0].shape[0]
        return [c / (batch * n * self.T) for c, n in zip(self.channel_spikes, positions)]

    @property
    def firing_rates(self) -> list[float]:
        """Mean spikes per neuron per time step, for each spiking layer."""
        return [float(s.float().mean()) / (n * self.T) for s, n in zip(self.spikes, self.neurons)]

    @property
    def spikes_per_decision(self) -> float:
        """Mean number of spikes in all hidden layers for one decision."""
        return float(sum(s.float().mean() for s in self.spikes))


def if_scan(current: torch.Tensor, v: torch.Tensor, threshold: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference IF dynamics over T: H = V + I; S = [H >= threshold]; V = H - S * threshold.

    The same equations as SpikingJelly's soft-reset `IFNode`, in place and without the per-step
    copies its trainable kernel keeps for backward (about 4x faster on CPU). On CPU the loop runs
    as one C call where it can (`dqn2snn_plugin._native.fused_scan`, bit-identical); this is its reference.
    """
    fused = fused_scan.if_scan(current, v, threshold)
    if fused is not None:
        return fused
    v = v.clone()
    spikes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
    for t in range(current.shape[0]):
        step = spikes[t]
        v += current[t]
        torch.ge(v, threshold, out=step)
        v.sub_(step, alpha=threshold)
    return spikes, v


MAX_T = 10_000  # 20x the paper's 500; a decision at this T already takes seconds per frame on a CPU


def check_T(T: int) -> int:
    """T must be a positive integer, at most MAX_T."""
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T <= 0:
        raise ConfigError(f"T (time steps per decision) must be a positive integer, got {T!r}")
    if T > MAX_T:
        raise ConfigError(f"T = {T} time steps per decision is beyond any use (the paper's is 500): pass at most {MAX_T:,}")
    return int(T)


def check_readout(readout: str) -> str:
    if readout not in READOUTS:
        raise ConfigError(f"unknown readout {readout!r}: choose one of {', '.join(READOUTS)}")
    return readout


def check_coding(coding: str) -> str:
    if coding not in CODINGS:
        raise ConfigError(f"coding must be one of {', '.join(CODINGS)}, got {coding!r}")
    return coding


@functools.cache
def _bit_weights(T: int) -> torch.Tensor:
    """2**(T-1-t) for t = 0 .. T-1 (float64): the weight of each step's spike in a T-bit code."""
    return torch.tensor([2.0 ** (T - 1 - t) for t in range(T)], dtype=torch.float64)


def _joined(chunks: list[torch.Tensor]) -> torch.Tensor:
    """The batch chunks as one tensor (a single chunk as it is: no copy)."""
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _weighted(stage: nn.Sequential) -> nn.Module:
    """The Conv2d or Linear layer of a synaptic stage."""
    return next(layer for layer in stage if isinstance(layer, (nn.Conv2d, nn.Linear)))


def fan_out(synapse: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Number of synapses leaving each input neuron of `synapse` (its column of the weight pattern)."""
    x = torch.ones(1, *input_shape, requires_grad=True)
    with torch.enable_grad():
        probe = _weights_to_ones(synapse)
        probe(x).sum().backward()
    return x.grad[0].detach()


def _weights_to_ones(synapse: nn.Module) -> nn.Module:
    layers = []
    for layer in synapse:
        if isinstance(layer, nn.Conv2d):
            ones = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                             layer.padding, bias=False)
            nn.init.ones_(ones.weight)
            layers.append(ones)
        elif isinstance(layer, nn.Linear):
            ones = nn.Linear(layer.in_features, layer.out_features, bias=False)
            nn.init.ones_(ones.weight)
            layers.append(ones)
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


class SpikingQNetwork(nn.Module):
    """A converted DQN. `snn(obs, T)` -> readout values [B, n_actions]; `snn.act(obs, T)` -> actions.

    `obs` is what the DQN takes: raw observations, numpy or torch, uint8 or float, one or a batch.
    By default every call starts from fresh membranes (state reset before each decision);
    `carry_state=True` keeps the membranes between calls, for consecutive frames of one episode
    (call `reset_state()` at episode boundaries).
    `coding="binary"` sends each activation as a T-bit number instead of a rate (few spikes, 2**T
    levels, T steps per layer: see `dqn2snn_plugin.binary_coding`); it keeps no state between calls.
    """

    def __init__(
        self,
        synapses: list[nn.Sequential],
        neurons: list[nn.Module],
        output_neuron: nn.Module,
        backend: NeuronBackend,
        scales: LayerScales,
        observation_shape: tuple[int, ...],
        *,
        initial_membrane: float = 0.0,
        input_coding: InputCoding = "analog",
        input_max: float | None = None,
        readout: Readout = "spikes+membrane",
        T: int = 64,
        coding: Coding = "rate",
        native: nn.Module | None = None,
        source_network: nn.Sequential | None = None,
    ) -> None:
        super().__init__()
        if len(synapses) != len(neurons) + 1:
            raise ValueError("need one synaptic stage before every neuron layer and one after the last")
        if input_coding not in ("analog", "poisson"):
            raise ConfigError(f"input_coding must be 'analog' or 'poisson', got {input_coding!r}")
        if input_coding == "poisson" and not (input_max and input_max > 0):
            raise ConfigError("Poisson input coding needs input_max > 0 (the value that fires at every step)")
        if check_coding(coding) == "binary":
            if input_coding != "analog":
                raise ConfigError("binary spike coding integrates the analog observation: use input_coding='analog'")
            binary_coding.check_bits(check_T(T))
        self.synapses = nn.ModuleList(synapses)
        self.neurons = nn.ModuleList(neurons)
        self.output_neuron = output_neuron
        self.backend = backend
        self.scales = scales
        self.observation_shape = tuple(observation_shape)
        self.initial_membrane = float(initial_membrane)
        self.input_coding = input_coding
        self.input_max = input_max
        self.readout = check_readout(readout)
        self.T = check_T(T)
        self.coding = coding
        self.native = native
        # the (unfolded) Q-network this SNN was converted from, held outside the module tree so that
        # snn.to() / snn.double() never touch the user's network; `store.save_snn` saves it
        self._source: tuple[nn.Sequential, ...] = () if source_network is None else (source_network,)
        self.carry_state = False
        # per-layer bias corrections added after folding (see dqn2snn_plugin.improve.tuning); saved with the SNN
        self.bias_shifts: list[torch.Tensor] = [torch.zeros(_weighted(s).out_channels if isinstance(_weighted(s), nn.Conv2d)
                                                            else _weighted(s).out_features) for s in synapses]
        self.generator = torch.Generator().manual_seed(0)
        self.last_stats: SimulationStats | None = None
        self._state: list[torch.Tensor] | None = None
        self._fan_out = self._layer_fan_outs()
        self._neurons_per_sample = sum(int(f.numel()) for f in self._fan_out) + self.n_actions
        # memory and speed knobs (results do not depend on them):
        self.max_elements = 2**27  # neuron-steps held at once; larger batches are simulated in chunks
        # time steps are simulated in blocks of about this many samples / B; None: 512 on CPU (the
        # block stays in cache), 32768 on a GPU (fewer, larger kernel launches)
        self.block_samples: int | None = None
        self.event_driven = True  # synapses read the spikes event by event when few neurons fire
        # where the event-driven pass beats the dense one (2 CPU cores, Nature CNN layers, measured by
        # `benchmarks/simulation_speed.py --profile`): rate coding's [T*B] spike maps below an input
        # firing rate of sparse_rate + sparse_rows / maps (few maps: the dense pass is bound by reading
        # the weights); binary coding's weighted planes, which sum into [B] membranes, below sparse_rate_planes
        self.sparse_rate, self.sparse_rows, self.sparse_rate_planes = 0.1, 1.5, 0.3
        self.sparse_min_inputs = 1024  # narrower layers stay dense: the event-driven pass's fixed cost outweighs
        self._weights_t: dict[int, tuple[tuple, torch.Tensor]] = {}  # per layer: its weight, output last

    @property
    def source_network(self) -> nn.Sequential | None:
        """The Q-network this SNN was converted from (the distilled copy, for a distilled SNN)."""
        return self._source[0] if self._source else None

    @property
    def _after_first(self):
        """The synaptic stages after the first, as an iterator (slicing a ModuleList builds a new module)."""
        return itertools.islice(self.synapses, 1, None)

    @property
    def n_actions(self) -> int:
        return _weighted(self.synapses[-1]).out_features

    def _layer_fan_outs(self) -> list[torch.Tensor]:
        shape = self.observation_shape
        fan_outs = []
        with torch.no_grad():
            shapes = []
            weight = _weighted(self.synapses[0]).weight
            x = torch.zeros(1, *shape, device=weight.device, dtype=weight.dtype)
            for synapse in self.synapses:
                shapes.append(tuple(x.shape[1:]))
                x = synapse(x)
        for synapse, in_shape in zip(self.synapses[1:], shapes[1:]):
            fan_outs.append(fan_out(synapse, in_shape).to(x.device))
        return fan_outs

    @torch.no_grad()
    def shift_bias(self, stage: int, delta: torch.Tensor) -> None:
        """Add `delta` (per output channel, in threshold units per step) to stage `stage`'s bias."""
        layer = _weighted(self.synapses[stage])
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros_like(layer.weight[:, 0].flatten()))
        delta = torch.as_tensor(delta, dtype=layer.bias.dtype).reshape(-1).to(layer.bias.device)
        layer.bias += delta
        self.bias_shifts[stage] = self.bias_shifts[stage] + delta.cpu().to(self.bias_shifts[stage].dtype)

    @property
    def channel_positions(self) -> list[int]:
        """Neurons per channel in each spiking layer (H*W for convolutions, 1 for fully connected)."""
        return [int(f[0].numel()) if f.ndim > 1 else 1 for f in self._fan_out]

    def reset_state(self) -> None:
        """Forget carried membranes (only matters with carry_state=True)."""
        self._state = None

    def _prepare(self, obs) -> torch.Tensor:
        x = observation_batch(obs, self.observation_shape)
        weight = _weighted(self.synapses[0]).weight  # simulate in the network's dtype: snn.double() gives float64
        return x.to(device=weight.device, dtype=weight.dtype)

    @torch.no_grad()
    def readouts(self, obs, T: int | None = None) -> dict[str, torch.Tensor]:
        """Simulate T steps and return every readout at once: {name: values [B, n_actions]}."""
        T = check_T(self.T if T is None else T)
        return self.readouts_at(obs, [T])[T]

    @torch.no_grad()
    def readouts_at(self, obs, Ts: list[int]) -> dict[int, dict[str, torch.Tensor]]:
        """Readouts after each T in `Ts`, from one simulation of max(Ts) steps.

        Exact, not an approximation: with state reset before the decision, the first T steps of a
        longer run are the T-step run. `last_stats` describes the longest one. (Binary coding runs
        each T on its own: a shorter code is not the start of a longer one.)
        """
        Ts = sorted({check_T(T) for T in Ts})
        x = self._prepare(obs)
        if self.coding == "binary":
            binary_coding.check_bits(Ts[-1])
            if self.carry_state:
                raise ConfigError("binary spike coding empties the membranes at every decision: carry_state must be False")
        state = self._state if self.carry_state and self._state is not None else None
        if state is not None and state[-1].shape[0] != x.shape[0]:
            raise ObservationError(
                f"carried membranes are for a batch of {state[-1].shape[0]}, got {x.shape[0]}: call reset_state()"
            )
        block_samples = self.block_samples or (512 if x.device.type == "cpu" else 32768)
        # binary coding holds all T spike planes of a layer at once
        block = Ts[-1] if self.coding == "binary" else max(1, min(Ts[-1], block_samples // x.shape[0]))
        chunk = max(1, self.max_elements // (block * self._neurons_per_sample))
        parts = [
            self._simulate(x[i : i + chunk], Ts, block, None if state is None else [v[i : i + chunk] for v in state])
            for i in range(0, x.shape[0], chunk)
        ]
        results = {T: {name: _joined([p[0][T][name] for p in parts]) for name in READOUTS} for T in Ts}
        if self.carry_state:
            self._state = [_joined(vs) for vs in zip(*(p[1] for p in parts))]
        stats = SimulationStats(Ts[-1], neurons=[int(f.numel()) for f in self._fan_out])
        stats.spikes = [_joined(layer) for layer in zip(*(p[2] for p in parts))]
        stats.synaptic_ops = _joined([p[3] for p in parts])
        stats.channel_spikes = [sum(layer[1:], layer[0]) for layer in zip(*(p[4] for p in parts))]
        self.last_stats = stats
        return results

    def _simulate(self, x: torch.Tensor, Ts: list[int], block: int, state: list[torch.Tensor] | None):
        """One batch chunk, `block` time steps at a time (IF is causal, so blocks chain exactly).

        Returns (readouts per T, final membranes, spike totals per layer, synaptic operations,
        spike totals per channel); with binary coding those of the largest T.
        """
        if self.coding == "binary":
            results = {}
            for T in Ts:
                q, *rest = self._simulate_binary(x, T)
                results[T] = dict.fromkeys(READOUTS, q)  # the output layer only integrates: one readout
            return results, *rest
        batch = x.shape[0]
        if state is None:
            shapes = [f.shape for f in self._fan_out] + [(self.n_actions,)]
            state = [torch.full((batch, *shape), self.initial_membrane, dtype=x.dtype, device=x.device) for shape in shapes]
        state = list(state)
        first = self.synapses[0](x) if self.input_coding == "analog" else None  # constant: computed once
        counts = self.new_counts(batch, x)
        out_v0, integrated, count = state[-1].clone(), 0.0, 0.0
        results, done = {}, 0
        for end in sorted(set(range(block, Ts[-1], block)) | set(Ts)):
            steps = end - done
            current = first.expand(steps, *first.shape) if first is not None else self._poisson_current(x, steps)
            for index, (neuron, synapse) in enumerate(zip(self.neurons, self._after_first)):
                fused = self._fused_rate_layer(index, neuron, synapse, current, state[index], counts)
                if fused is not None:
                    state[index], current = fused
                    continue
                spikes, state[index] = self.backend.run(neuron, current, state[index])
                self.count(index, spikes, counts)
                current = self.synaptic_current(synapse, spikes)
            # `current` is now the output layer's input in Q units, [steps, B, n_actions]
            out_spikes, state[-1] = self.backend.run(self.output_neuron, current / self.scales.output, state[-1])
            integrated, count, done = integrated + current.sum(0), count + out_spikes.sum(0), end
            if end in Ts:
                results[end] = {
                    "spikes": count * self.scales.output / end,
                    # N + V - V0: with no leak, exactly the integrated input (the paper's robust rate)
                    "spikes+membrane": (count + state[-1] - out_v0) * self.scales.output / end,
                    "membrane": integrated / end,
                }
        return results, state, *counts

    def _fused_rate_layer(self, index: int, neuron: nn.Module, synapse: nn.Sequential, current: torch.Tensor,
                          v: torch.Tensor, counts) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The IF scan, count and event-driven pass of one rate-coded layer in one C call
        (`fused_scan.rate_layer`), where the backend's neuron is `if_scan`: (final membrane, next current
        [T, B, ...]), the same as the three steps in turn; None elsewhere (then they run in turn)."""
        threshold = getattr(self.backend, "scan_threshold", lambda neuron, current: None)(neuron, current)
        if threshold is None:
            return None
        totals, synaptic_ops, channels = counts
        weighted = self._event_target(synapse, v.numel() // v.shape[0])
        maps = current.shape[0] * current.shape[1]
        done = fused_scan.rate_layer(current, v, threshold, self._fan(index, v), totals[index], channels[index],
                                     synaptic_ops, weighted, None if weighted is None else self._event_weight(weighted),
                                     self.sparse_rate + self.sparse_rows / maps)
        if done is None:
            return None
        spikes, v, following = done
        following = synapse(spikes.flatten(0, 1)) if following is None else following
        return v, following.unflatten(0, spikes.shape[:2])

    def _simulate_binary(self, x: torch.Tensor, T: int):
        """Binary coding at T bits on the float observations `x` (see `dqn2snn_plugin.binary_coding`).

        Returns (Q-values [B, n_actions], final membranes, spike totals per layer [B], synaptic
        operations [B], spike totals per channel).
        """
        levels = float(2**T - 1)
        v = self.synapses[0](x) * levels  # the analog input's current, the same at every step
        stats = self.new_counts(x.shape[0], x)
        membranes = []
        # the backend's neurons send T-bit codes; another T than the network's gets fresh ones
        neurons = self.neurons if T == self.T else [self.backend.make_binary_neuron(T, self.initial_membrane)
                                                    for _ in self.neurons]
        for index, (neuron, synapse) in enumerate(zip(neurons, self._after_first)):
            fused = self._fused_binary_layer(index, neuron, synapse, v, T, stats)
            if fused is not None:
                residual, v = fused
                membranes.append(residual)
                continue
            spikes, residual = self.backend.fire_binary(neuron, v)
            membranes.append(residual)
            self.count(index, spikes, stats)
            v = self.integrated_current(synapse, spikes)
        membranes.append(v)
        return v / levels, membranes, *stats  # the output stage is folded in Q units

    def _fused_binary_layer(self, index: int, neuron: nn.Module, synapse: nn.Sequential, v: torch.Tensor, T: int,
                            counts) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Fire, count and the event-driven pass of one binary layer in one C call (`fused_scan.binary_layer`),
        where the backend's neuron fires exactly as `binary_coding.fire`: (residual, next membrane), the
        same as the three steps in turn; None elsewhere (then they run in turn)."""
        start = getattr(self.backend, "binary_start", lambda neuron, v: None)(neuron, v)
        if start is None:
            return None
        totals, synaptic_ops, channels = counts
        weighted = self._event_target(synapse, v.numel() // v.shape[0])
        done = fused_scan.binary_layer(v, T, start, self._fan(index, v), totals[index], channels[index], synaptic_ops,
                                       weighted, None if weighted is None else self._event_weight(weighted),
                                       _bit_weights(T), self.sparse_rate_planes)
        if done is None:
            return None
        spikes, residual, following = done
        return residual, self._integrated_densely(synapse, spikes) if following is None else following

    def new_counts(self, batch: int, like: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Zeroed spike counters: totals per layer [B], synaptic operations [B], totals per channel [C]."""
        zeros = {"dtype": like.dtype, "device": like.device}
        return ([torch.zeros(batch, **zeros) for _ in self._fan_out], torch.zeros(batch, **zeros),
                [torch.zeros(f.shape[0], **zeros) for f in self._fan_out])

    def count(self, layer: int, spikes: torch.Tensor, counts) -> None:
        """Add spiking layer `layer`'s spikes [T, B, ...] to `counts` (from `new_counts`), in place."""
        totals, synaptic_ops, channels = counts
        fan = self._fan(layer, spikes)
        if fused_scan.tally(spikes, fan, totals[layer], channels[layer], synaptic_ops):
            return
        per_neuron = spikes.sum(0)
        totals[layer] += per_neuron.flatten(1).sum(1)
        channels[layer] += per_neuron.sum(0).flatten(1).sum(1) if per_neuron.ndim > 2 else per_neuron.sum(0)
        synaptic_ops += (per_neuron * fan).flatten(1).sum(1)

    def _fan(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        """Spiking layer `layer`'s synapses per neuron, on `like`'s device and dtype (moved once, then kept)."""
        fan = self._fan_out[layer]
        if fan.device != like.device or fan.dtype != like.dtype:
            fan = self._fan_out[layer] = fan.to(like)
        return fan

    def synaptic_current(self, synapse: nn.Sequential, spikes: torch.Tensor) -> torch.Tensor:
        """The next layer's input current [T, B, ...] from spikes [T, B, ...].

        Event-driven on CPU when few inputs spike: each spike adds its weight column to its targets
        (`fused_scan.events`; the same sums as a dense pass in another order); otherwise one dense
        batched pass over all T*B spike maps.
        """
        flat = spikes.flatten(0, 1)
        out = self._events(synapse, flat)
        return (synapse(flat) if out is None else out).unflatten(0, spikes.shape[:2])

    def integrated_current(self, synapse: nn.Sequential, spikes: torch.Tensor) -> torch.Tensor:
        """Binary coding's next membrane [B, ...] from spike planes [T, B, ...]: sum_t 2**(T-1-t) I_t.

        Event-driven as weighted spikes where few inputs spike (a spike of step t adds 2**(T-1-t)
        times its weights: one event each); otherwise dense currents integrated by doubling.
        """
        out = self._events(synapse, spikes, _bit_weights(spikes.shape[0]))
        return self._integrated_densely(synapse, spikes) if out is None else out

    @staticmethod
    def _integrated_densely(synapse: nn.Sequential, spikes: torch.Tensor) -> torch.Tensor:
        """`integrated_current` by dense passes: the currents of all T*B planes, integrated by doubling."""
        return binary_coding.integrate(synapse(spikes.flatten(0, 1)).unflatten(0, spikes.shape[:2]))

    def _events(self, synapse: nn.Sequential, spikes: torch.Tensor, scales: torch.Tensor | None = None):
        """`fused_scan.events` through the stage's weighted layer, or None (then a dense pass)."""
        if spikes.device.type != "cpu":
            return None
        weighted = self._event_target(synapse, (spikes[0] if scales is None else spikes[0, 0]).numel())
        if weighted is None:
            return None
        x = spikes.flatten(1 if scales is None else 2) if isinstance(weighted, nn.Linear) else spikes  # [rows, F]
        limit = self.sparse_rate + self.sparse_rows / spikes.shape[0] if scales is None else self.sparse_rate_planes
        return fused_scan.events(x, weighted, self._event_weight(weighted), scales=scales, max_fraction=limit)

    def _event_target(self, synapse: nn.Sequential, inputs: int) -> nn.Module | None:
        """The layer an event-driven pass would run for `synapse`, whose spike maps hold `inputs` neurons
        each; None where it stays dense (switched off, another kind of stage, a narrow layer)."""
        weighted = self._event_layer(synapse) if self.event_driven else None
        return weighted if weighted is not None and inputs >= self.sparse_min_inputs else None

    @staticmethod
    def _event_layer(synapse: nn.Sequential) -> nn.Module | None:
        """The stage's Conv2d / Linear if the stage is that layer alone (a Flatten before it allowed)."""
        *before, last = synapse
        ok = isinstance(last, (nn.Conv2d, nn.Linear)) and all(isinstance(m, nn.Flatten) for m in before)
        return last if ok else None

    def _event_weight(self, layer: nn.Module) -> torch.Tensor:
        """The weight with its output dimension last (each input's targets contiguous), kept until the
        weight changes (in place: its version counter moves; or by .to() / .double(): its storage
        moves). One entry per layer."""
        weight = layer.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self._weights_t.get(id(layer))
        if cached is None or cached[0] != key:
            cached = self._weights_t[id(layer)] = (key, weight.detach().permute(*range(1, weight.ndim), 0).contiguous())
        return cached[1]

    def _poisson_current(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """First layer's input current [T, B, ...] from Bernoulli spike trains with rate x / input_max."""
        rates = (x / self.input_max).clamp(0, 1).expand(T, *x.shape)
        spikes_in = torch.bernoulli(rates, generator=self.generator) * self.input_max
        return self.synapses[0](spikes_in.flatten(0, 1)).unflatten(0, (T, x.shape[0]))

    def forward(self, obs, T: int | None = None, readout: Readout | None = None) -> torch.Tensor:
        """Readout values [B, n_actions] after T time steps (default readout: the network's own)."""
        return self.readouts(obs, T)[check_readout(readout or self.readout)]

    def act(self, obs, T: int | None = None, readout: Readout | None = None) -> torch.Tensor:
        """Greedy actions [B]; ties go to the lowest action index."""
        return self.forward(obs, T, readout).argmax(dim=1)
