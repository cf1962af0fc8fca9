"""How a neuron sends its activation: the coding strategy of a spiking Q-network.

One object per scheme holds everything that depends on it, so that no module compares names:

- `RATE`, the paper's: up to T spikes per neuron for T + 1 levels; every layer runs at once for T
  steps, so a decision takes T steps, and membranes may be carried between decisions.
- `BINARY`: T-bit codes, most significant bit first (`dqn2snn_plugin.binary_coding`): at most T spikes
  for 2**T levels, T steps per layer, nothing carried between decisions, no NIR form.
- `DELTA`: binary coding's quantised network (2**T - 1 levels) whose neurons keep their state from the
  previous observation of the same episode and send only the change of their level, as one graded event
  (`dqn2snn_plugin.engine.delta`): one step per layer, state carried per env, no NIR form.

Each holds its defaults (T, initial membrane, the Ts a sweep or a search tries), its limits (largest
T, input codings, carried state), its latency, whether NIR can express it and bias calibration applies,
the levels a distilled copy is trained for, the neurons a backend builds for it, and its schedule: the
engine that simulates it (`dqn2snn_plugin.engine`).

A coding is also its name (a `str`): option dicts, result records and saved files that hold "rate" or
"binary" hold the same value, and `check_coding(name)` maps a name back to its object.

A new coding is a `Coding` subclass with its own schedule module in `engine/`, added with `register`,
as `DELTA` is: it sets `carries_state = True`, its defaults and limits, and a schedule whose `simulate`
starts from the carried state and whose `fresh_state` is a reset row; the network, the engine's chunking
and statistics, and the other codings stay as they are.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from torch import nn

from dqn2snn_plugin import binary_coding
from dqn2snn_plugin.engine import binary, delta, rate
from dqn2snn_plugin.errors import ConfigError

if TYPE_CHECKING:
    from dqn2snn_plugin.engine import Schedule
    from dqn2snn_plugin.normalization import LayerScales

MAX_T = 10_000  # 20x the paper's 500; a decision at this T already takes seconds per frame on a CPU


def check_T(T: int) -> int:
    """T must be a positive integer, at most MAX_T (any coding; `Coding.check_T` applies the coding's own limit)."""
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T <= 0:
        raise ConfigError(f"T (time steps per decision) must be a positive integer, got {T!r}")
    if T > MAX_T:
        raise ConfigError(f"T = {T} time steps per decision is beyond any use (the paper's is 500): pass at most {MAX_T:,}")
    return int(T)


class Coding(str, metaclass=ABCMeta):
    """A coding scheme, equal to (and saved as) its name. Subclasses set the class attributes."""

    name: ClassVar[str]
    default_T: ClassVar[int]  # T of `convert` and the CLI when none is given
    sweep_Ts: ClassVar[tuple[int, ...]]  # the Ts `dqn2snn sweep` tries by default
    search_Ts: ClassVar[tuple[int, ...]]  # the Ts `improve.tuning.cheapest_T` (`dqn2snn tune`) tries by default
    max_T: ClassVar[int]  # the largest T the coding can simulate
    initial_membrane: ClassVar[str]  # `convert`'s default: "zero" or "half" (a key of conversion.INITIAL_MEMBRANES)
    input_codings: ClassVar[tuple[str, ...]]  # the input codings it can take
    carries_state: ClassVar[bool]  # whether membranes may be kept between decisions (carry_state=True)
    # whether carried state leaves every decision as it would be afresh (it only saves work): then the players of
    # `experiments.evaluation` carry it per env whatever the network's carry_state
    carries_exactly: ClassVar[bool] = False
    nir_exportable: ClassVar[bool]  # whether NIR's IF nodes express its neurons (`io.nir_graph.to_nir`)
    why_not_nir: ClassVar[str] = ""  # where they do not: why (for the error)
    bias_calibration: ClassVar[bool]  # whether rate matching (`improve.tuning.calibrate_biases`) applies
    snn_training: ClassVar[bool]  # whether `distill` has a phase through the simulated SNN (else the copy is exact)
    schedule: ClassVar[Schedule]  # the engine schedule that simulates it
    T_note: ClassVar[str] = ""  # what T counts, where it is not time steps per decision (for tables)
    graded_events: ClassVar[bool] = False  # whether an event carries a multi-bit value (costs: a MAC, not an add)

    def __new__(cls) -> Coding:
        return super().__new__(cls, cls.name)

    def __reduce__(self):
        return check_coding, (self.name,)  # one object per coding, also through copy and pickle

    @property
    def label(self) -> str:
        """How a scale label (e.g. "distilled T=8 binary") names the coding: nothing for the paper's."""
        return f" {self.name}"

    def check_T(self, T: int) -> int:
        """T, if this coding can simulate it (ConfigError otherwise)."""
        T = check_T(T)
        if T > self.max_T:
            raise ConfigError(f"{self.name} coding simulates at most T = {self.max_T}, got T={T}")
        return T

    def check(self, T: int, input_coding: str) -> None:
        """ConfigError unless a network of this coding can run at T with `input_coding`."""
        self.check_T(T)
        if input_coding not in self.input_codings:
            raise ConfigError(f"{self.name} coding takes input_coding {' or '.join(map(repr, self.input_codings))}, "
                              f"got {input_coding!r}: use input_coding={self.input_codings[0]!r}")

    def residual_carry_refusal(self) -> str | None:
        """Why a residual carry (CRPI, `network.ResidualCarry`) cannot start this coding's decisions, or None
        where it can: it shifts carried IF membranes, so a coding that carries nothing, or whose carried state
        leaves each decision as it would be afresh, has none to shift."""
        if not self.carries_state:
            return f"{self.name} coding starts every decision afresh"
        if self.carries_exactly:
            return f"{self.name} coding's carried state leaves each decision as it would be afresh"
        return None

    def check_carry(self, carry_state: bool) -> None:
        """ConfigError if membranes are to be carried between decisions and this coding cannot."""
        if carry_state and not self.carries_state:
            raise ConfigError(f"{self.name} coding starts every decision afresh: carry_state must be False")

    @abstractmethod
    def latency(self, T: int, layers: int) -> int:
        """Time steps from observation to action of a network of `layers` weighted layers."""

    @abstractmethod
    def levels(self, T: int) -> int:
        """Activation levels a neuron sends at T (what a distilled copy is quantised to)."""

    @abstractmethod
    def make_neuron(self, backend, T: int, initial_membrane: float) -> nn.Module:
        """One spiking layer of `backend` for this coding."""

    @abstractmethod
    def recipe(self, scales: LayerScales, T: int, initial_membrane: float):
        """SpikingJelly's `ann2snn` recipe for this coding, on precomputed `scales`."""

    @abstractmethod
    def step_layers(self, T: int, initial_membrane: float) -> list[nn.Module]:
        """The layers between two folded synaptic stages in SpikingJelly single-step form (see
        `SpikingQNetwork.as_sequential`)."""


class RateCoding(Coding):
    """The paper's rate coding: a neuron's rate over T steps is its activation."""

    name = "rate"
    default_T = 64
    sweep_Ts = (8, 16, 32, 64, 128, 256, 500)
    search_Ts = (4, 8, 16, 32, 64, 128)
    max_T = MAX_T
    initial_membrane = "zero"
    input_codings = ("analog", "poisson")
    carries_state = True
    nir_exportable = True
    bias_calibration = True
    snn_training = True
    schedule = rate.SCHEDULE

    @property
    def label(self) -> str:
        return ""

    def latency(self, T: int, layers: int) -> int:
        return T  # every layer runs at once

    def levels(self, T: int) -> int:
        return T

    def make_neuron(self, backend, T: int, initial_membrane: float) -> nn.Module:
        return backend.make_neuron(initial_membrane)

    def recipe(self, scales: LayerScales, T: int, initial_membrane: float):
        from dqn2snn_plugin.adapters.spikingjelly import RobustNormRecipe

        return RobustNormRecipe(scales=scales, half_threshold=initial_membrane == 0.5, channel_wise=scales.channel_wise)

    def step_layers(self, T: int, initial_membrane: float) -> list[nn.Module]:
        from dqn2snn_plugin.adapters.spikingjelly import step_neuron

        return [step_neuron(initial_membrane)]


class BinaryCoding(Coding):
    """T-bit spike codes (`dqn2snn_plugin.binary_coding`): T steps per layer, 2**T - 1 levels."""

    name = "binary"
    default_T = 8
    sweep_Ts = (2, 4, 6, 8, 10, 12, 16)
    search_Ts = sweep_Ts
    max_T = binary_coding.MAX_BITS
    initial_membrane = "half"  # round to the nearest level
    input_codings = ("analog",)  # the first layer integrates the analog observation
    carries_state = False  # every decision empties the membranes
    nir_exportable = False
    why_not_nir = "its neurons halve their threshold and double their membrane between steps, which NIR's IF cannot express"
    bias_calibration = False  # rate matching is for rate-coded networks
    snn_training = False  # the SNN computes the quantised copy exactly
    schedule = binary.SCHEDULE
    T_note = " (binary coding: steps per layer, bits per spike code)"

    def check_T(self, T: int) -> int:
        return binary_coding.check_bits(check_T(T))

    def latency(self, T: int, layers: int) -> int:
        return T * layers  # each layer needs its whole input code before it sends its own

    def levels(self, T: int) -> int:
        return 2 ** self.check_T(T) - 1

    def make_neuron(self, backend, T: int, initial_membrane: float) -> nn.Module:
        return backend.make_binary_neuron(T, initial_membrane)

    def recipe(self, scales: LayerScales, T: int, initial_membrane: float):
        from dqn2snn_plugin.adapters.spikingjelly import BinaryCodingRecipe

        return BinaryCodingRecipe(bits=T, channel_wise=scales.channel_wise, initial_membrane=initial_membrane,
                                  scales=scales)

    def step_layers(self, T: int, initial_membrane: float) -> list[nn.Module]:
        from spikingjelly.activation_based.ann2snn.modules import VoltageScaler

        from dqn2snn_plugin.adapters.spikingjelly import binary_few_spike_node

        # the folded stage gives the gate in threshold units; the node takes least-significant bits
        return [VoltageScaler(float(2**T - 1)), binary_few_spike_node(T, initial_membrane)]


class DeltaCoding(BinaryCoding):
    """Binary coding's quantised network sent as changes (`dqn2snn_plugin.engine.delta`): each neuron keeps
    its membrane and its last sent level between the observations of an episode and sends the change of
    its level, when there is one, as one graded event (a signed integer, Loihi 2's graded spike).

    A decision equals binary coding's at the same T (bits; 2**T - 1 levels, rounding start), so the
    defaults, limits, neurons and recipes are binary coding's: the delta network is the same network,
    simulated over time instead of afresh. Every layer sends its changes in one step: latency is one
    step per weighted layer. A graded event is a multiply-accumulate at each target, not an addition.
    """

    name = "delta"
    carries_state = True  # the point: state carried per env, reset where its episode resets
    carries_exactly = True  # each decision equals the quantised network's on that observation alone
    why_not_nir = ("its neurons keep their level between observations and send signed multi-bit changes, "
                   "which NIR's IF nodes cannot express")
    schedule = delta.SCHEDULE
    T_note = " (delta coding: bits per level, changes sent as graded events)"
    graded_events = True

    def latency(self, T: int, layers: int) -> int:
        return layers  # each layer integrates its input changes and sends its own in one step


RATE, BINARY, DELTA = RateCoding(), BinaryCoding(), DeltaCoding()
_KNOWN: dict[str, Coding] = {}
CODINGS: tuple[str, ...] = ()  # the names of the known codings, in registration order


def register(scheme: Coding) -> Coding:
    """Make `scheme` known by its name (to `check_coding` and `CODINGS`)."""
    global CODINGS
    _KNOWN[scheme.name] = scheme
    CODINGS = tuple(_KNOWN)
    return scheme


register(RATE)
register(BINARY)
register(DELTA)


def check_coding(name: str) -> Coding:
    """The coding named `name` ("rate", "binary", "delta"; a Coding is its own name), or ConfigError."""
    found = _KNOWN.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(f"coding must be one of {', '.join(CODINGS)}, got {name!r}")
    return found
