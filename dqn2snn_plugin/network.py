"""The spiking Q-network: integrate-and-fire layers run for T time steps per decision.

Every hidden ReLU of the DQN becomes a layer of integrate-and-fire neurons (threshold 1, reset by
subtraction, no leak), with the layer scales folded into the weights (W_l * lambda_{l-1} / lambda_l,
b_l / lambda_l). The neurons come from a framework backend (SpikingJelly or snnTorch, see
`dqn2snn_plugin.adapters`); how an activation is sent is the network's coding (`dqn2snn_plugin.coding`);
how it is simulated is the engine's (`dqn2snn_plugin.engine`). This module holds the model and its
public calls only.

Readouts, all in Q-value units so they compare with the DQN (ties: lowest action index, as
`torch.argmax` everywhere in this package): "spikes", "spikes+membrane" (the paper's robust rate) and
"membrane"; see `engine.rate`.

Between decisions a rate-coded network may keep its membranes (`carry_state`): as they are ("raw
carry"), or through `ResidualCarry`, the cross-step residual potential initialisation (CRPI) of Xu et
al., "Error Amplification Limits ANN-to-SNN Conversion in Continuous Control" (ICML 2026,
arXiv:2601.21778; official code github.com/xuzijie32/ANN2SNN-CRPI, `MuJoCo/convert.py`).
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Iterator, Literal, Protocol, Sequence, Union

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.coding import Coding, check_coding
from dqn2snn_plugin.engine import READOUTS, Engine, SimulationOptions, SimulationStats
from dqn2snn_plugin.engine.stats import weighted
from dqn2snn_plugin.errors import ConfigError, ObservationError
from dqn2snn_plugin.normalization import LayerScales
from dqn2snn_plugin.observations import observation_batch

Readout = Literal["spikes", "spikes+membrane", "membrane"]
Rows = Union[Sequence[int], np.ndarray, torch.Tensor, None]  # carried rows: indices (or a boolean mask to reset)
InputCoding = Literal["analog", "poisson"]


class NeuronBackend(Protocol):
    """What a framework adapter provides: its IF neurons and a way to run them over a sequence.

    `scan_threshold` and `binary_start` let a layer run as one C call (`engine.native`); a backend
    whose neurons are not exactly those references returns None from them.
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

    def scan_threshold(self, neuron: nn.Module, current: torch.Tensor) -> float | None:
        """The threshold where `run(neuron, current, v)` is exactly `engine.rate.if_scan(current, v, threshold)`."""

    def binary_start(self, neuron: nn.Module, v: torch.Tensor) -> float | None:
        """The start where `fire_binary(neuron, v)` is exactly `binary_coding.fire(v, bits, start)`."""


def check_readout(readout: str) -> str:
    if readout not in READOUTS:
        raise ConfigError(f"unknown readout {readout!r}: choose one of {', '.join(READOUTS)}")
    return readout


@dataclass(frozen=True)
class ResidualCarry:
    """CRPI: each neuron starts decision t + 1 from the charge it kept back in decision t, scaled and clipped.

    For every IF neuron (hidden and output layers), in threshold units, after a decision that started at
    membrane v_s, ended at v_e and sent N spikes:

        residual = max(v_e - v_s, -N)      # = max(sum of its input, 0) - N: what it received and did not send
        next start = initial_membrane + clip(scale * residual, -clip, +clip)

    as the official code's `SpikingNeuron.reset` computes it (`init = clamp(mem - init, min=-thre * fire)`,
    then `clamp(init * rate, -thre / 2, thre / 2)`, on top of a half-threshold start). The lower bound
    -N stops a neuron whose input summed below zero from carrying a debt it never ran up in spikes. A fresh
    decision (the first of an episode, a row reset) starts at `initial_membrane`, so CRPI is this with
    initial_membrane = 0.5 ("half", `convert`'s default with a residual carry) and clip = 0.5.

    Args:
        scale: the paper's alpha, in [0, 1]; its code tries 0, 0.1, ..., 1 per task and keeps the best
            (no single value is recommended). 0 is a fresh start at every decision.
        clip: the largest shift of the start, in threshold units, in (0, 1]; 0.5 in the paper.
    """

    scale: float
    clip: float = 0.5

    def __post_init__(self) -> None:
        """ConfigError, in one line, for a scale outside [0, 1] or a clip outside (0, 1] (nan, inf, text)."""
        for name, zero_allowed in (("scale", True), ("clip", False)):
            value = getattr(self, name)
            number = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
            if not number or not (0.0 <= value <= 1.0) or (value == 0.0 and not zero_allowed):
                interval = "[0, 1]" if zero_allowed else "(0, 1]"
                raise ConfigError(f"residual carry {name} must be a number in {interval} (threshold units), got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def parse(cls, text: str) -> ResidualCarry:
        """`"0.5"` (scale, clip 0.5) or `"0.5,0.25"` (scale, clip): the command line's and saved files' form."""
        parts = [part.strip() for part in str(text).split(",")]
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise ConfigError(f"residual carry must be SCALE or SCALE,CLIP (e.g. 0.5 or 0.5,0.5), got {text!r}")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            raise ConfigError(f"residual carry must be SCALE or SCALE,CLIP numbers (e.g. 0.5,0.5), got {text!r}") from None
        return cls(*numbers)

    def __str__(self) -> str:
        return f"{self.scale!r},{self.clip!r}"  # shortest text that reads back to the same floats

    def next_start(self, initial_membrane: float, start: torch.Tensor, end: torch.Tensor,
                   integrated: torch.Tensor) -> torch.Tensor:
        """The next decision's start from this one's `start` and `end` membranes and its summed input
        `integrated` (all per neuron, threshold units): end - start + max(-integrated, 0) is
        max(end - start, -N), since end = start + integrated - N with no leak."""
        residual = end - start + (-integrated).clamp(min=0)
        return (residual * self.scale).clamp(-self.clip, self.clip) + initial_membrane


class SpikingQNetwork(nn.Module):
    """A converted DQN. `snn(obs, T)` -> readout values [B, n_actions]; `snn.act(obs, T)` -> actions.

    `obs` is what the DQN takes: raw observations, numpy or torch, uint8 or float, one or a batch.
    By default every call starts from fresh membranes (state reset before each decision);
    `carry_state=True` keeps the membranes between calls, for consecutive frames of one episode
    (call `reset_state()` at episode boundaries), where the coding allows it: the final membranes as
    they are, or with `residual_carry` set the start `ResidualCarry` makes of them (set at
    construction, `residual_carry` turns `carry_state` on). In a vector env each env keeps its own:
    pass `rows=` (the env of each observation) and reset the rows whose episode starts
    (`reset_state(rows)`); `envs.play.play` tells a `StatefulPolicy` both, and the games of
    `experiments.evaluation` play the network as one.

    Args:
        synapses: the folded synaptic stages, one before each spiking layer and one after the last.
        neurons: the backend's spiking layers; output_neuron: the IF layer of the spike-count readouts.
        backend: the framework adapter that runs the neurons (`NeuronBackend`).
        scales: the layer scales folded into `synapses`; observation_shape: one observation's shape.
        initial_membrane: the membrane at the start of a decision (threshold units).
        input_coding: "analog" (the observation at every step) or "poisson" (spike trains with rate
            obs / input_max).
        readout: `forward`'s default readout; T: its default number of steps (bits, with binary coding).
        coding: a `Coding` or its name ("rate", "binary").
        source_network: the unfolded Q-network it was converted from (what `io.store.save_snn` saves).
        options: the engine's speed and memory knobs (`SimulationOptions`; results do not depend on them).
        residual_carry: how carried membranes start the next decision (`ResidualCarry`, CRPI), or None.
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
        coding: Coding | str = "rate",
        source_network: nn.Sequential | None = None,
        options: SimulationOptions | None = None,
        residual_carry: ResidualCarry | None = None,
    ) -> None:
        super().__init__()
        if len(synapses) != len(neurons) + 1:
            raise ValueError("need one synaptic stage before every neuron layer and one after the last")
        if input_coding not in ("analog", "poisson"):
            raise ConfigError(f"input_coding must be 'analog' or 'poisson', got {input_coding!r}")
        if input_coding == "poisson" and not (input_max and input_max > 0):
            raise ConfigError("Poisson input coding needs input_max > 0 (the value that fires at every step)")
        self.coding = check_coding(coding)
        self.coding.check(T, input_coding)
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
        self.T = self.coding.check_T(T)
        # the (unfolded) Q-network this SNN was converted from, held outside the module tree so that
        # snn.to() / snn.double() never touch the user's network; `store.save_snn` saves it
        self._source: tuple[nn.Sequential, ...] = () if source_network is None else (source_network,)
        self.residual_carry = residual_carry
        self.carry_state = residual_carry is not None
        refusal = self.coding.residual_carry_refusal()
        if residual_carry is not None and refusal:
            raise ConfigError(f"{refusal}: a residual carry needs rate coding")
        # per-layer bias corrections added after folding (see dqn2snn_plugin.improve.tuning); saved with the SNN
        self.bias_shifts: list[torch.Tensor] = [torch.zeros(_outputs(weighted(s))) for s in synapses]
        self.generator = torch.Generator().manual_seed(0)
        self.last_stats: SimulationStats | None = None
        self._state: list[torch.Tensor] | None = None
        self.engine = Engine(synapses, self.observation_shape, options)

    @property
    def options(self) -> SimulationOptions:
        """The engine's speed and memory knobs (set fields in place: `snn.options.event_driven = False`)."""
        return self.engine.options

    @property
    def source_network(self) -> nn.Sequential | None:
        """The Q-network this SNN was converted from (the distilled copy, for a distilled SNN)."""
        return self._source[0] if self._source else None

    @property
    def hidden_to_next(self) -> Iterator[nn.Sequential]:
        """The synaptic stages after the first, each fed by a spiking layer (slicing a ModuleList builds a new module)."""
        return itertools.islice(self.synapses, 1, None)

    @property
    def n_actions(self) -> int:
        return weighted(self.synapses[-1]).out_features

    @property
    def channel_positions(self) -> list[int]:
        """Neurons per channel in each spiking layer (H*W for convolutions, 1 for fully connected)."""
        return self.engine.counter.channel_positions

    @torch.no_grad()
    def shift_bias(self, stage: int, delta: torch.Tensor) -> None:
        """Add `delta` (per output channel, in threshold units per step) to stage `stage`'s bias."""
        layer = weighted(self.synapses[stage])
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros_like(layer.weight[:, 0].flatten()))
        delta = torch.as_tensor(delta, dtype=layer.bias.dtype).reshape(-1).to(layer.bias.device)
        layer.bias += delta
        self.bias_shifts[stage] = self.bias_shifts[stage] + delta.cpu().to(self.bias_shifts[stage].dtype)

    def as_sequential(self) -> nn.Sequential:
        """The network as a plain `nn.Sequential` in SpikingJelly's single-step form: the folded stages
        (the very modules of `synapses`, so bias shifts and `.to()` show through) with fresh neurons of
        the coding between them, and the last stage's current as the output.

        Run it the SpikingJelly way: `functional.reset_net(net)` before a decision, then one call per time
        step. Rate coding: sum the outputs over T steps, / T: the "membrane" readout. Binary coding: one
        call sends each layer's whole code; its output is the Q-value readout.
        """
        layers: list[nn.Module] = []
        for stage in self.synapses[:-1]:
            layers += [*stage, *self.coding.step_layers(self.T, self.initial_membrane)]
        return nn.Sequential(*layers, *self.synapses[-1])

    def reset_state(self, rows: Rows = None) -> None:
        """Forget carried membranes (only matters with carry_state=True): all of them, or those of `rows`
        (indices or a boolean mask of the carried rows, e.g. the envs whose episode starts), which start
        their next decision fresh."""
        if rows is None or self._state is None:
            self._state = None if rows is None else self._state
            return
        rows = torch.as_tensor(rows, device=self._state[0].device)
        rows = rows.nonzero().flatten() if rows.dtype == torch.bool else rows.long()
        rows = rows[rows < self._state[0].shape[0]]  # rows never carried start fresh anyway
        for v, fresh in zip(self._state, self.coding.schedule.fresh_state(self, len(rows))):
            v[rows] = fresh

    def _prepare(self, obs) -> torch.Tensor:
        x = observation_batch(obs, self.observation_shape)
        weight = weighted(self.synapses[0]).weight  # simulate in the network's dtype: snn.double() gives float64
        return x.to(device=weight.device, dtype=weight.dtype)

    @torch.no_grad()
    def readouts(self, obs, T: int | None = None, *, rows: Rows = None) -> dict[str, torch.Tensor]:
        """Simulate T steps and return every readout at once: {name: values [B, n_actions]}."""
        T = self.coding.check_T(self.T if T is None else T)
        return self.readouts_at(obs, [T], rows=rows)[T]

    @torch.no_grad()
    def readouts_at(self, obs, Ts: list[int], *, rows: Rows = None) -> dict[int, dict[str, torch.Tensor]]:
        """Readouts after each T in `Ts`, from one simulation of max(Ts) steps (rate coding; binary
        coding runs each T on its own, see `engine.binary`). `last_stats` describes the longest one.

        Exact, not an approximation: with state reset before the decision, the first T steps of a
        longer run are the T-step run. With `carry_state` the next decision starts from the max(Ts)-step one.

        With carry_state, `rows` [B] (indices, e.g. env numbers) says which carried rows the observations
        continue: their state is read and written back, the other rows' kept; a row never seen starts
        fresh. Without `rows` the carried state must have exactly B rows (the observations' own order).
        """
        Ts = sorted({self.coding.check_T(T) for T in Ts})
        if not Ts:
            raise ConfigError("readouts_at needs at least one T (time steps to read the outputs after)")
        x = self._prepare(obs)
        self.coding.check_carry(self.carry_state)
        if rows is not None and self.carry_state:
            return self._readouts_of_rows(x, Ts, torch.as_tensor(rows, dtype=torch.long).reshape(-1))
        state = self._state if self.carry_state and self._state is not None else None
        if state is not None and state[-1].shape[0] != x.shape[0]:
            raise ObservationError(
                f"carried membranes are for a batch of {state[-1].shape[0]}, got {x.shape[0]}: call reset_state()"
            )
        if not self.carry_state:
            results, _, self.last_stats = self.engine.run(self, x, Ts, None)
            return results
        results, self._state, self.last_stats = self._run(x, Ts, state)
        return results

    def _readouts_of_rows(self, x: torch.Tensor, Ts: list[int], rows: torch.Tensor) -> dict[int, dict[str, torch.Tensor]]:
        """`readouts_at` continuing the carried rows `rows` (grown with fresh rows to hold them all)."""
        if rows.shape[0] != x.shape[0] or (rows < 0).any() or len(set(rows.tolist())) != len(rows):
            raise ObservationError(f"rows must be {x.shape[0]} distinct indices >= 0, one per observation, got {rows.tolist()}")
        carried = 0 if self._state is None else self._state[0].shape[0]
        needed = int(rows.max()) + 1 if len(rows) else 0
        if needed > carried:
            fresh = self.coding.schedule.fresh_state(self, needed - carried)
            self._state = [f.clone() for f in fresh] if self._state is None else [
                torch.cat([v, f.to(v)]) for v, f in zip(self._state, fresh)]
        if needed == carried and torch.equal(rows, torch.arange(carried)):  # every row in order: as it is
            results, self._state, self.last_stats = self._run(x, Ts, self._state)
            return results
        rows = rows.to(self._state[0].device)
        results, membranes, self.last_stats = self._run(x, Ts, [v[rows] for v in self._state])
        for v, new in zip(self._state, membranes):
            v[rows] = new
        return results

    def _run(self, x: torch.Tensor, Ts: list[int], state: list[torch.Tensor] | None):
        """`engine.run` keeping the state; a schedule may update `state` in place (delta coding), so an error
        drops the carried state (every row starts fresh) rather than keep a half-updated one."""
        try:
            return self.engine.run(self, x, Ts, state, keep_state=True)
        except BaseException:
            self._state = None
            raise

    def forward(self, obs, T: int | None = None, readout: Readout | None = None) -> torch.Tensor:
        """Readout values [B, n_actions] after T time steps (default readout: the network's own)."""
        return self.readouts(obs, T)[check_readout(readout or self.readout)]

    def act(self, obs, T: int | None = None, readout: Readout | None = None, *, rows: Rows = None) -> torch.Tensor:
        """Greedy actions [B]; ties go to the lowest action index. `rows`: see `readouts_at`."""
        return self.readouts(obs, T, rows=rows)[check_readout(readout or self.readout)].argmax(dim=1)


def _outputs(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
