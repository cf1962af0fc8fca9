"""`convert`: a DQN and calibration states in, a `SpikingQNetwork` out (the paper's method by default).

Steps: validate the network -> compute exact per-layer scales on the calibration set -> build the
backend's neurons (SpikingJelly: through its `ann2snn.Converter` with our `RobustNormRecipe`, or
`BinaryCodingRecipe` for binary coding; snnTorch: `snn.Leaky` or our `BinaryFewSpikes` layers) ->
fold the scales into a copy of the weights. Nothing is built if any step fails, and the user's
network is never modified.
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from torch import nn

from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.errors import ConfigError, UnsupportedLayerError
from dqn2snn_plugin.io.checks import check_scales, spiking_channels
from dqn2snn_plugin.observations import as_observation_array
from dqn2snn_plugin.normalization import SYNAPSES, LayerScales, Rank, check_network, layer_scales
from dqn2snn_plugin.coding import Coding, check_coding
from dqn2snn_plugin.network import InputCoding, Readout, ResidualCarry, SpikingQNetwork, check_readout

Backend = Literal["spikingjelly", "snntorch"]
BACKENDS: tuple[str, ...] = ("spikingjelly", "snntorch")
INITIAL_MEMBRANES = {"zero": 0.0, "half": 0.5}


def split_stages(network: nn.Sequential) -> list[list[nn.Module]]:
    """The layers between ReLUs: stage l feeds spiking layer l; the last stage gives the Q-values."""
    stages: list[list[nn.Module]] = [[]]
    for layer in network:
        if isinstance(layer, nn.ReLU):
            stages.append([])
        else:
            stages[-1].append(layer)
    for index, stage in enumerate(stages):
        if sum(isinstance(layer, SYNAPSES) for layer in stage) != 1:
            raise UnsupportedLayerError(
                f"stage {index} ({[type(m).__name__ for m in stage]}) must hold exactly one Conv2d or Linear "
                "between two ReLUs"
            )
    return stages


def _input_scale(scale: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Broadcast the previous layer's scale over this layer's input dimension."""
    if scale.ndim == 0:
        return scale
    if isinstance(layer, nn.Conv2d):
        return scale.view(1, -1, 1, 1)
    return scale.repeat_interleave(layer.in_features // scale.numel()).view(1, -1)


def _output_scale(scale: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    if scale.ndim == 0:
        return scale
    return scale.view(-1, 1, 1, 1) if isinstance(layer, nn.Conv2d) else scale.view(-1, 1)


@torch.no_grad()
def fold_scales(network: nn.Sequential, scales: LayerScales) -> list[nn.Sequential]:
    """Copies of each stage with W * lambda_in / lambda_out and b / lambda_out (the output stays in Q units)."""
    stages = split_stages(copy.deepcopy(network))
    one = torch.tensor(1.0)
    lambdas = [one, *[s.detach().cpu().float() for s in scales.hidden], one]
    folded = []
    for index, stage in enumerate(stages):
        for layer in stage:
            if isinstance(layer, SYNAPSES):
                device = layer.weight.device
                s_in, s_out = lambdas[index].to(device), lambdas[index + 1].to(device)
                layer.weight.mul_(_input_scale(s_in, layer)).div_(_output_scale(s_out, layer))
                if layer.bias is not None:
                    layer.bias.div_(s_out.reshape(-1) if s_out.ndim else s_out)
        folded.append(nn.Sequential(*stage))
    return folded


def _resolve(checkpoint_or_module, calibration) -> tuple[nn.Sequential, tuple[int, ...], torch.Tensor]:

    if isinstance(checkpoint_or_module, DQNCheckpoint):
        network = checkpoint_or_module.q_network
        shape = tuple(checkpoint_or_module.observation_shape)
        states = checkpoint_or_module.prepare(as_observation_array(calibration, shape))
    elif isinstance(checkpoint_or_module, nn.Module):
        check_network(checkpoint_or_module)
        network = checkpoint_or_module
        batches = [calibration] if isinstance(calibration, (np.ndarray, torch.Tensor)) else list(calibration or [])
        shape = tuple(batches[0].shape[1:]) if batches else _input_shape_of(network)
        states = as_observation_array(batches, shape).float().to(next(network.parameters()).device)
    else:
        raise ConfigError(
            f"convert() takes a DQNCheckpoint (see load_dqn) or an nn.Sequential, got {type(checkpoint_or_module).__name__}"
        )
    check_network(network)
    return network.eval(), shape, states


def make_backend(name: str):
    """The neuron backend for `name` (imported lazily: each pulls in its framework)."""
    if name == "spikingjelly":
        from dqn2snn_plugin.adapters.spikingjelly import SpikingJellyBackend

        return SpikingJellyBackend()
    if name == "snntorch":
        from dqn2snn_plugin.adapters.snntorch import SnnTorchBackend

        return SnnTorchBackend()
    raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def convert(
    checkpoint_or_module: DQNCheckpoint | nn.Sequential,
    calibration,
    *,
    percentile: float | str = 99.9,
    rank: Rank = "nonzero",
    channel_wise: bool = False,
    backend: Backend = "spikingjelly",
    initial_membrane: Literal["zero", "half"] | None = None,
    input_coding: InputCoding = "analog",
    input_max: float | None = None,
    readout: Readout = "spikes+membrane",
    T: int | None = None,
    scales: LayerScales | None = None,
    coding: Coding | str = "rate",
    residual_carry: ResidualCarry | str | None = None,
) -> SpikingQNetwork:
    """Convert a DQN into a spiking Q-network.

    Args:
        checkpoint_or_module: a `DQNCheckpoint` from `load_dqn`, or a plain `nn.Sequential` of
            Conv2d / Linear / ReLU / Flatten taking float observations.
        calibration: observations the network sees (array, tensor or iterable of them): the scales
            are percentiles of the activations they cause. See `collect_observations`.
        percentile: p in (0, 100] or "max"; rank: "all" or "nonzero" values (see normalization).
        channel_wise: one scale per channel instead of per layer.
        backend: "spikingjelly" (SpikingJelly IF neurons, or FewSpikeNode with binary coding, converted
            with its Converter and our recipe) or "snntorch" (`snn.Leaky` with beta = 1, or our
            `BinaryFewSpikes` with binary coding).
        initial_membrane: "zero" (the paper) or "half" (threshold / 2, removes the rate's floor bias);
            default: "zero" with rate coding, "half" (round to the nearest level) with binary or delta coding
            or a residual carry.
        input_coding: "analog" (observation injected at every step, the paper) or "poisson".
        input_max: with Poisson coding, the input value that spikes at every step (255 for images).
        readout: default readout of `snn(obs)`: "spikes", "spikes+membrane" (paper) or "membrane".
        T: default number of time steps per decision (with binary coding: steps per layer and bits per
            activation); default: the coding's `default_T` (64 for rate coding, 8 for binary and delta coding).
        scales: precomputed `LayerScales` (skips the calibration pass; `calibration` may be None).
        coding: "rate" (the paper: up to T spikes per neuron for T levels), "binary" (T-bit codes,
            most significant bit first: at most T spikes for 2**T levels, T steps per layer; see
            `dqn2snn_plugin.binary_coding`), "delta" (binary coding's levels, each neuron keeping its state
            between the observations of an episode and sending only changes, as graded events; set
            `carry_state = True` to carry it, see `dqn2snn_plugin.engine.delta`), or a `Coding`
            (`dqn2snn_plugin.coding`). Binary coding measured best with percentile=99.99.
        residual_carry: CRPI (`network.ResidualCarry`, or its text "SCALE[,CLIP]"): the SNN keeps state
            between calls (`carry_state`) and starts each decision from the previous one's clipped, scaled
            residual membrane on top of `initial_membrane`; rate coding only. None: every call starts afresh.
    """
    coding = check_coding(coding)
    T = coding.check_T(coding.default_T if T is None else T)
    check_readout(readout)
    if isinstance(residual_carry, str):
        residual_carry = ResidualCarry.parse(residual_carry)
    if initial_membrane is None:
        initial_membrane = "half" if residual_carry is not None else coding.initial_membrane
    if initial_membrane not in INITIAL_MEMBRANES:
        raise ConfigError(f"initial_membrane must be 'zero' or 'half', got {initial_membrane!r}")
    neuron_backend = make_backend(backend)
    if scales is None and calibration is None:
        raise ConfigError("convert() needs calibration observations (e.g. collect_observations(ckpt)) "
                          "or precomputed scales=")
    if scales is None:
        network, shape, states = _resolve(checkpoint_or_module, calibration)
        scales = layer_scales(network, states, percentile, rank=rank, channel_wise=channel_wise)
    else:
        network = getattr(checkpoint_or_module, "q_network", checkpoint_or_module)
        check_network(network)
        shape = tuple(getattr(checkpoint_or_module, "observation_shape", ()) or _input_shape_of(network))
        check_scales(scales, spiking_channels(network), "convert(scales=...)", ConfigError)
    v0 = INITIAL_MEMBRANES[initial_membrane]
    neurons = _build_neurons(neuron_backend, network, scales, v0, coding, T)
    if input_coding == "poisson" and input_max is None and len(shape) == 3:
        input_max = 255.0
    return SpikingQNetwork(
        fold_scales(network, scales), neurons, neuron_backend.make_neuron(v0), neuron_backend, scales, shape,
        initial_membrane=v0, input_coding=input_coding, input_max=input_max, readout=readout, T=T, coding=coding,
        source_network=network, residual_carry=residual_carry,
    )


def _input_shape_of(network: nn.Sequential) -> tuple[int, ...]:
    first = network[0]
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ConfigError("cannot infer the observation shape of a convolutional network: pass a DQNCheckpoint")


def _build_neurons(backend, network: nn.Sequential, scales: LayerScales, v0: float, coding: Coding,
                   T: int) -> list[nn.Module]:
    """The spiking layers. SpikingJelly: the neurons of its own Converter's graph, converted with the coding's
    recipe (RobustNormRecipe, or BinaryCodingRecipe: FewSpikeNode layers); the graph itself is not kept
    (`SpikingQNetwork.as_sequential` is the network as a plain graph). snnTorch: Leaky or BinaryFewSpikes layers."""
    if backend.name != "spikingjelly":
        return [coding.make_neuron(backend, T, v0) for _ in scales.hidden]
    from spikingjelly.activation_based.ann2snn import Converter

    graph = Converter(recipe=coding.recipe(scales, T, v0)).convert(copy.deepcopy(network))
    return backend.neurons_of(graph)
