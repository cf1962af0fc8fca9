"""How a spiking Q-network is simulated, apart from what the network is (`dqn2snn_plugin.network`).

- `rate.py`, `binary.py`, `delta.py`: each coding's schedule (which layer runs when, over how many steps), as
  pure-torch references; the coding names its schedule (`dqn2snn_plugin.coding`).
- `native.py`: the fused C paths a schedule takes where they apply (one call per layer).
- `events.py`: the synaptic passes (event-driven or dense) and the speed knobs, `SimulationOptions`.
- `stats.py`: spike counts, fan-outs and `SimulationStats`.

`Engine` is what they share for one network: its options, its counter and its synaptic passes; `run`
splits a batch into chunks that fit `options.max_elements`, runs the coding's schedule on each and
joins the results. Which framework's neuron a layer uses is the backend's business (`network.backend`);
which machine runs it (C loops, torch, the framework's own kernel) is decided per layer by the backend
and `native` together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from dqn2snn_plugin.engine.events import SimulationOptions, Synapses
from dqn2snn_plugin.engine.stats import Counter, Counts, SimulationStats, joined

if TYPE_CHECKING:
    from dqn2snn_plugin.network import SpikingQNetwork

READOUTS: tuple[str, ...] = ("spikes", "spikes+membrane", "membrane")

Readouts = dict[int, dict[str, torch.Tensor]]  # per T: {readout name: values [B, n_actions]}


class Schedule(Protocol):
    """How one coding simulates a network (`rate.SCHEDULE`, `binary.SCHEDULE`, `delta.SCHEDULE`).
    A coding that carries state between decisions also says what a reset row holds (`fresh_state`)."""

    def steps_held(self, Ts: list[int], batch: int, options: SimulationOptions, device: torch.device) -> int:
        """Time steps of one chunk held at once (sets the chunk size under `options.max_elements`)."""

    def simulate(self, engine: Engine, net: SpikingQNetwork, x: torch.Tensor, Ts: list[int], block: int,
                 state: list[torch.Tensor] | None) -> tuple[Readouts, list[torch.Tensor], Counts]:
        """One batch chunk `x` from membranes `state` (None: fresh): readouts per T, the membranes the next
        decision starts from (the final ones; rate coding with a residual carry: its start), counts."""

    def fresh_state(self, net: SpikingQNetwork, batch: int) -> list[torch.Tensor]:
        """`batch` rows of the state a decision starts from after a reset (codings that carry state only)."""


class Engine:
    """The simulation machinery of one network (see the module doc).

    Args:
        synapses: the network's synaptic stages; observation_shape: what the first takes (no batch).
        options: the speed and memory knobs (default `SimulationOptions()`).
    """

    def __init__(self, synapses: list[nn.Sequential], observation_shape: tuple[int, ...],
                 options: SimulationOptions | None = None) -> None:
        self.options = options or SimulationOptions()
        self.counter = Counter(synapses, observation_shape)
        self.synapses = Synapses(self.options)

    def run(self, net: SpikingQNetwork, x: torch.Tensor, Ts: list[int], state: list[torch.Tensor] | None,
            keep_state: bool = False) -> tuple[Readouts, list[torch.Tensor] | None, SimulationStats]:
        """Simulate `net` on prepared observations `x` for each T in `Ts` (sorted) with its coding's schedule,
        in batch chunks, from membranes `state` (None: fresh): readouts per T, the membranes the next decision
        starts from (`Schedule.simulate`; with `keep_state`, else None: joining the chunks' costs memory),
        statistics of the longest run."""
        schedule = net.coding.schedule
        block = schedule.steps_held(Ts, x.shape[0], self.options, x.device)
        chunk = max(1, self.options.max_elements // (block * self.counter.neurons_per_sample))
        parts = [
            schedule.simulate(self, net, x[i : i + chunk], Ts, block, None if state is None else [v[i : i + chunk] for v in state])
            for i in range(0, x.shape[0], chunk)
        ]
        results = {T: {name: joined([p[0][T][name] for p in parts]) for name in READOUTS} for T in Ts}
        membranes = [joined(list(vs)) for vs in zip(*(p[1] for p in parts))] if keep_state else None
        return results, membranes, self.counter.stats(Ts[-1], [p[2] for p in parts])
