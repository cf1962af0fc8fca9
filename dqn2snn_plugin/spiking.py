"""The spiking Q-network: integrate-and-fire layers simulated for T time steps per decision.

Every hidden ReLU of the DQN becomes a layer of integrate-and-fire neurons (threshold 1, reset by
subtraction, no leak), with the layer scales folded into the weights (W_l * lambda_{l-1} / lambda_l,
b_l / lambda_l). The neurons themselves come from a framework backend (SpikingJelly or snnTorch, see
`dqn2snn_plugin.adapters`); this module only schedules them.

Simulation is layer by layer over all T steps at once ("multi-step"): each synaptic layer runs one
batched pass over [T*B] inputs, each neuron layer one scan over T. With the paper's analog input
(the observation injected at every step) the first layer's current is the same at every step, so it
is computed once. Spikes equal those of step-by-step simulation (a test checks it).

Readouts, all in Q-value units so they compare with the DQN (ties: lowest action index, as
`torch.argmax` everywhere in this package):
- "spikes": output spike count N * lambda_out / T (output neurons fire on Q / lambda_out).
- "spikes+membrane": (N + V_T) * lambda_out / T, the paper's "robust firing rate".
- "membrane": a non-spiking integrating output, the mean output current (sum_t I_t / T).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.errors import ConfigError, ObservationError
from dqn2snn_plugin.normalization import LayerScales

Readout = Literal["spikes", "spikes+membrane", "membrane"]
READOUTS: tuple[str, ...] = ("spikes", "spikes+membrane", "membrane")
InputCoding = Literal["analog", "poisson"]


class NeuronBackend(Protocol):
    """What a framework adapter provides: its IF neurons and a way to run them over a sequence."""

    name: str

    def make_neuron(self, initial_membrane: float) -> nn.Module:
        """One IF layer (threshold 1, subtractive reset) whose membrane starts at `initial_membrane`."""

    def run(self, neuron: nn.Module, current: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate `current` [T, B, ...] from membrane `v` [B, ...]; return spikes [T, B, ...] and final v."""


@dataclass
class SimulationStats:
    """What the last call did: spikes per layer and sample, firing rates, synaptic operations."""

    T: int
    spikes: list[torch.Tensor] = field(default_factory=list)  # per layer: [B] spike totals over T
    neurons: list[int] = field(default_factory=list)  # per layer: number of neurons
    synaptic_ops: torch.Tensor | None = None  # [B] spikes times fan-out, summed over layers

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
    copies its trainable kernel keeps for backward (about 4x faster on CPU).
    """
    v = v.clone()
    spikes = torch.empty(current.shape, dtype=current.dtype, device=current.device)
    for t in range(current.shape[0]):
        v += current[t]
        spikes[t] = v >= threshold
        v -= spikes[t] * threshold
    return spikes, v


def check_T(T: int) -> int:
    """T must be a positive integer."""
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T <= 0:
        raise ConfigError(f"T (time steps per decision) must be a positive integer, got {T!r}")
    return int(T)


def check_readout(readout: str) -> str:
    if readout not in READOUTS:
        raise ConfigError(f"unknown readout {readout!r}: choose one of {', '.join(READOUTS)}")
    return readout


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
        native: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(synapses) != len(neurons) + 1:
            raise ValueError("need one synaptic stage before every neuron layer and one after the last")
        if input_coding not in ("analog", "poisson"):
            raise ConfigError(f"input_coding must be 'analog' or 'poisson', got {input_coding!r}")
        if input_coding == "poisson" and not (input_max and input_max > 0):
            raise ConfigError("Poisson input coding needs input_max > 0 (the value that fires at every step)")
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
        self.native = native
        self.carry_state = False
        self.generator = torch.Generator().manual_seed(0)
        self.last_stats: SimulationStats | None = None
        self._state: list[torch.Tensor] | None = None
        self._fan_out = self._layer_fan_outs()
        self._neurons_per_sample = sum(int(f.numel()) for f in self._fan_out) + self.n_actions
        self.max_elements = 2**27  # neuron-steps per simulated chunk (a few hundred MB)

    @property
    def n_actions(self) -> int:
        return self.synapses[-1][-1].out_features

    def _layer_fan_outs(self) -> list[torch.Tensor]:
        shape = self.observation_shape
        fan_outs = []
        with torch.no_grad():
            shapes = []
            x = torch.zeros(1, *shape)
            for synapse in self.synapses:
                shapes.append(tuple(x.shape[1:]))
                x = synapse(x)
        for synapse, in_shape in zip(self.synapses[1:], shapes[1:]):
            fan_outs.append(fan_out(synapse, in_shape))
        return fan_outs

    def reset_state(self) -> None:
        """Forget carried membranes (only matters with carry_state=True)."""
        self._state = None

    def _prepare(self, obs) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        shape = self.observation_shape
        if tuple(x.shape) == shape:
            x = x.unsqueeze(0)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ObservationError(
                f"observations of shape {tuple(x.shape)} do not match this network's input: "
                f"expected [B, {', '.join(map(str, shape))}]"
            )
        device = self.synapses[0][0].weight.device
        return x.to(device=device, dtype=torch.float32)

    @torch.no_grad()
    def readouts(self, obs, T: int | None = None) -> dict[str, torch.Tensor]:
        """Simulate T steps and return every readout at once: {name: values [B, n_actions]}."""
        T = check_T(self.T if T is None else T)
        return self.readouts_at(obs, [T])[T]

    @torch.no_grad()
    def readouts_at(self, obs, Ts: list[int]) -> dict[int, dict[str, torch.Tensor]]:
        """Readouts after each T in `Ts`, from one simulation of max(Ts) steps.

        Exact, not an approximation: with state reset before the decision, the first T steps of a
        longer run are the T-step run. Large batches are simulated in chunks of at most
        `max_elements` neuron-steps (memory grows with T x batch); `last_stats` covers the whole batch.
        """
        Ts = sorted({check_T(T) for T in Ts})
        x = self._prepare(obs)
        state = self._state if self.carry_state and self._state is not None else None
        if state is not None and state[-1].shape[0] != x.shape[0]:
            raise ObservationError(
                f"carried membranes are for a batch of {state[-1].shape[0]}, got {x.shape[0]}: call reset_state()"
            )
        chunk = max(1, self.max_elements // (Ts[-1] * self._neurons_per_sample))
        parts = [
            self._simulate(x[i : i + chunk], Ts, None if state is None else [v[i : i + chunk] for v in state])
            for i in range(0, x.shape[0], chunk)
        ]
        results = {T: {name: torch.cat([p[0][T][name] for p in parts]) for name in READOUTS} for T in Ts}
        if self.carry_state:
            self._state = [torch.cat(vs) for vs in zip(*(p[1] for p in parts))]
        stats = SimulationStats(Ts[-1], neurons=parts[0][2].neurons)
        stats.spikes = [torch.cat(layer) for layer in zip(*(p[2].spikes for p in parts))]
        stats.synaptic_ops = torch.cat([p[2].synaptic_ops for p in parts])
        self.last_stats = stats
        return results

    def _simulate(self, x: torch.Tensor, Ts: list[int], state: list[torch.Tensor] | None):
        """One chunk: (readouts per T, final membranes, stats)."""
        current = self._input_current(x, Ts[-1])
        batch = x.shape[0]
        new_state, stats = [], SimulationStats(Ts[-1], synaptic_ops=torch.zeros(batch, device=x.device))
        for index, (neuron, synapse) in enumerate(zip(self.neurons, self.synapses[1:])):
            v0 = state[index] if state is not None else torch.full_like(current[0], self.initial_membrane)
            spikes, v = self.backend.run(neuron, current, v0)
            new_state.append(v)
            totals = spikes.sum(0)
            stats.spikes.append(totals.flatten(1).sum(1))
            stats.neurons.append(totals[0].numel())
            stats.synaptic_ops += (totals * self._fan_out[index].to(totals.device)).flatten(1).sum(1)
            current = synapse(spikes.flatten(0, 1)).unflatten(0, spikes.shape[:2])
        # `current` now holds the output layer's input current in Q units, [T, B, n_actions]
        v0 = state[-1] if state is not None else torch.full_like(current[0], self.initial_membrane)
        out_spikes, v_out = self.backend.run(self.output_neuron, current / self.scales.output, v0)
        new_state.append(v_out)
        cum_current, cum_spikes = current.cumsum(0), out_spikes.cumsum(0)
        results = {}
        for T in Ts:
            integrated, count = cum_current[T - 1], cum_spikes[T - 1]
            results[T] = {
                "spikes": count * self.scales.output / T,
                # N + V - V0 is the integrated input with no leak: the paper's robust rate
                "spikes+membrane": integrated / T if T < Ts[-1] else (count + v_out - v0) * self.scales.output / T,
                "membrane": integrated / T,
            }
        return results, new_state, stats

    def _input_current(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """First layer's input current [T, B, ...]: computed once for analog input (it is constant)."""
        if self.input_coding == "analog":
            first = self.synapses[0](x)
            return first.expand(T, *first.shape)
        rates = (x / self.input_max).clamp(0, 1).expand(T, *x.shape)
        spikes_in = torch.bernoulli(rates, generator=self.generator) * self.input_max
        return self.synapses[0](spikes_in.flatten(0, 1)).unflatten(0, (T, x.shape[0]))

    def forward(self, obs, T: int | None = None, readout: Readout | None = None) -> torch.Tensor:
        """Readout values [B, n_actions] after T time steps (default readout: the network's own)."""
        return self.readouts(obs, T)[check_readout(readout or self.readout)]

    def act(self, obs, T: int | None = None, readout: Readout | None = None) -> torch.Tensor:
        """Greedy actions [B]; ties go to the lowest action index."""
        return self.forward(obs, T, readout).argmax(dim=1)
