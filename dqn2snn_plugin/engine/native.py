"""The fused paths: a whole spiking layer (its neurons, its spike count and the event-driven pass of the
synapses after it) in one C call (`dqn2snn_plugin._native.fused_scan`).

They run where the backend's neuron is exactly the reference the C code implements, as the backend
says (`scan_threshold`: the IF scan; `binary_start`: `binary_coding.fire`), and where the C library
takes the tensors; elsewhere they return None and the schedule runs the three steps in turn, with the
same results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin.engine.events import bit_weights, integrated_densely
from dqn2snn_plugin.engine.stats import Counts

if TYPE_CHECKING:
    from dqn2snn_plugin.engine import Engine


def rate_layer(engine: Engine, backend, index: int, neuron: nn.Module, synapse: nn.Sequential, current: torch.Tensor,
               v: torch.Tensor, counts: Counts) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The IF scan, count and event-driven pass of one rate-coded layer in one call (`fused_scan.rate_layer`):
    (final membrane, next current [T, B, ...]); None where it does not apply."""
    threshold = backend.scan_threshold(neuron, current)
    if threshold is None:
        return None
    weighted = engine.synapses.target(synapse, v.numel() // v.shape[0])
    maps = current.shape[0] * current.shape[1]
    done = fused_scan.rate_layer(current, v, threshold, engine.counter.fan(index, v), counts.totals[index],
                                 counts.channels[index], counts.synaptic_ops, weighted,
                                 None if weighted is None else engine.synapses.weight(weighted),
                                 engine.options.rate_limit(maps))
    if done is None:
        return None
    spikes, v, following = done
    following = synapse(spikes.flatten(0, 1)) if following is None else following
    return v, following.unflatten(0, spikes.shape[:2])


def binary_layer(engine: Engine, backend, index: int, neuron: nn.Module, synapse: nn.Sequential, v: torch.Tensor,
                 T: int, counts: Counts) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Fire, count and the event-driven pass of one binary layer in one call (`fused_scan.binary_layer`):
    (residual, next membrane); None where it does not apply."""
    start = backend.binary_start(neuron, v)
    if start is None:
        return None
    weighted = engine.synapses.target(synapse, v.numel() // v.shape[0])
    done = fused_scan.binary_layer(v, T, start, engine.counter.fan(index, v), counts.totals[index],
                                   counts.channels[index], counts.synaptic_ops, weighted,
                                   None if weighted is None else engine.synapses.weight(weighted),
                                   bit_weights(T), engine.options.sparse_rate_planes)
    if done is None:
        return None
    spikes, residual, following = done
    return residual, integrated_densely(synapse, spikes) if following is None else following
