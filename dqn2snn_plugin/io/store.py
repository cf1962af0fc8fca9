"""Save a converted SNN to one file and rebuild it later, without calibration data or the original file.

The file (`torch.save` of plain dicts, lists and tensors, so `torch.load(weights_only=True)` reads it
and no code can hide in it) holds the DQN's layers and weights, the layer scales and the conversion
options (a residual carry as its text "SCALE,CLIP"), and the bias corrections of a tuned SNN. `load_snn` refolds the scales into the weights through `convert(..., scales=...)`, which is
deterministic, so the reloaded SNN gives the same outputs as the saved one.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path

import torch
from torch import nn

from dqn2snn_plugin.adapters.archive import load_weights_only
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import INITIAL_MEMBRANES, convert
from dqn2snn_plugin.errors import CheckpointError, ConfigError, UnsupportedLayerError
from dqn2snn_plugin.io.checks import check_device, check_scales, check_shapes, check_tensor, spiking_channels
from dqn2snn_plugin.normalization import LayerScales, check_network
from dqn2snn_plugin.io.results import check_save_path, write_file
from dqn2snn_plugin.network import SpikingQNetwork

FORMAT = "dqn2snn-snn-v1"


def _layer_spec(layer: nn.Module) -> dict:
    if isinstance(layer, nn.Conv2d):
        return {"type": "Conv2d", "in": layer.in_channels, "out": layer.out_channels, "kernel": list(layer.kernel_size),
                "stride": list(layer.stride), "padding": list(layer.padding), "bias": layer.bias is not None}
    if isinstance(layer, nn.Linear):
        return {"type": "Linear", "in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None}
    if isinstance(layer, nn.Flatten):
        return {"type": "Flatten", "start": layer.start_dim, "end": layer.end_dim}
    return {"type": type(layer).__name__}  # ReLU


def save_snn(snn: SpikingQNetwork, checkpoint: DQNCheckpoint, path: str | Path) -> None:
    """Write `snn` (converted from `checkpoint`, or from a distilled copy of it) to `path`, loadable with
    `load_snn`. The weights saved are those the SNN was converted from; `checkpoint` gives the metadata."""
    v0_name = next(name for name, v in INITIAL_MEMBRANES.items() if v == snn.initial_membrane)
    network = snn.source_network if snn.source_network is not None else checkpoint.q_network
    payload = {
        "format": FORMAT,
        "layers": [_layer_spec(layer) for layer in network],
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "checkpoint": {"n_actions": checkpoint.n_actions, "observation_shape": list(checkpoint.observation_shape),
                       "policy": checkpoint.policy, "algorithm": checkpoint.algorithm,
                       "sb3_version": checkpoint.sb3_version, "env_id": checkpoint.env_id, "source": checkpoint.source,
                       "input_scaling": checkpoint.input_scaling, "assumptions": list(checkpoint.assumptions)},
        "scales": {"hidden": [s.detach().cpu() for s in snn.scales.hidden], "output": snn.scales.output,
                   "percentile": snn.scales.percentile, "rank": snn.scales.rank,
                   "channel_wise": snn.scales.channel_wise, "n_states": snn.scales.n_states,
                   "state_trim": snn.scales.state_trim},
        "options": {"backend": snn.backend.name, "initial_membrane": v0_name, "input_coding": snn.input_coding,
                    "input_max": snn.input_max, "readout": snn.readout, "T": snn.T, "coding": snn.coding.name,
                    "residual_carry": None if snn.residual_carry is None else str(snn.residual_carry)},
        "bias_shifts": [shift.detach().cpu() for shift in snn.bias_shifts],
    }
    path = check_save_path(path, "SNN", "snn.pt")
    write_file(path, lambda tmp: torch.save(payload, tmp))  # atomic: never a half-written file


def load_snn(path: str | Path, *, device: str = "cpu") -> tuple[SpikingQNetwork, DQNCheckpoint]:
    """Rebuild the SNN saved by `save_snn`, and the network it was converted from: the DQN, or for a
    distilled SNN (scales.percentile "distilled T=...") the distilled copy, not the user's DQN.

    Every field is checked before anything is built from it (`io.checks`): the layers are built from
    the weights' own shapes, which the spec must agree with, so no edited spec allocates anything; the
    weights must be finite floats, the scales finite and positive with one value per layer or channel,
    the action count and observation shape those of the network, the options known. CheckpointError,
    naming the file and the field, for anything else."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: not a saved dqn2snn SNN (no such file: save one with save_snn or "
                              "`dqn2snn convert`)")
    device = check_device(device)
    try:
        payload = load_weights_only(Path(path), str(path))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: not a saved dqn2snn SNN ({str(exc).removeprefix(f'{path}: ')})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a saved dqn2snn SNN (format {FORMAT} expected)")
    where = str(path)
    network = _network(payload, where)
    checkpoint = _checkpoint(payload, network.to(device).eval(), where)
    scales = _scales(payload, network, where)
    options = _options(payload, where)
    shifts = _bias_shifts(payload, [*spiking_channels(network), checkpoint.n_actions], where)
    try:
        on_device = dataclasses.replace(scales, hidden=tuple(scale.to(device) for scale in scales.hidden))
        snn = convert(checkpoint, None, scales=on_device, **options)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: its saved options cannot be used: {exc}") from None
    for stage, shift in enumerate(shifts):
        if shift.abs().sum() > 0:  # corrections from dqn2snn_plugin.improve.tuning
            snn.shift_bias(stage, shift)
    return snn, checkpoint


_MISSING = object()


def _field(record: dict, key: str, kind: type | tuple[type, ...], where: str, prefix: str = "", default=_MISSING):
    """`record[key]` if it is a `kind` (`default` when absent, if given); CheckpointError naming it otherwise."""
    if key not in record and default is not _MISSING:
        return default
    value = record.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise CheckpointError(f"{where}: field {prefix}{key} is {'missing' if key not in record else repr(value)[:60]}: "
                              f"expected {' or '.join(k.__name__ for k in kinds)}")
    return value


# the checkpoint's text fields and their types; files saved before input_scaling was recorded get the default
TEXT_FIELDS = {"policy": str, "algorithm": str, "sb3_version": (str, type(None)), "env_id": (str, type(None)),
               "source": str, "input_scaling": str}


def _checkpoint(payload: dict, network: nn.Sequential, where: str) -> DQNCheckpoint:
    """The network's `DQNCheckpoint`, once its action count and observation shape fit the network."""
    info = _field(payload, "checkpoint", dict, where)
    n_actions = check_shapes(network, info.get("observation_shape"), _field(info, "n_actions", int, where, "checkpoint."),
                             where, CheckpointError)
    texts = {key: _field(info, key, kind, where, "checkpoint.",
                         default=DQNCheckpoint.input_scaling if key == "input_scaling" else _MISSING)
             for key, kind in TEXT_FIELDS.items()}
    assumptions = _field(info, "assumptions", list, where, "checkpoint.", default=[])
    if not all(isinstance(note, str) for note in assumptions):
        raise CheckpointError(f"{where}: field checkpoint.assumptions holds something other than text")
    return DQNCheckpoint(q_network=network, n_actions=n_actions, observation_shape=tuple(info["observation_shape"]),
                         assumptions=tuple(assumptions), **texts)


def _network(payload: dict, where: str) -> nn.Sequential:
    """The saved layers, each built from its weights' shapes once the spec agrees with them; every
    weight a finite float, no weight left over."""
    specs, state = _field(payload, "layers", list, where), _field(payload, "state_dict", dict, where)
    layers = [_layer(spec, index, state, where) for index, spec in enumerate(specs)]
    network = nn.Sequential(*layers)
    extra = sorted(set(state) - set(network.state_dict()))
    if extra:
        raise CheckpointError(f"{where}: the state dict holds weights no layer takes ({', '.join(map(str, extra[:3]))})")
    network.load_state_dict(state)
    try:
        check_network(network)
    except UnsupportedLayerError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    return network


def _layer(spec: object, index: int, state: dict, where: str) -> nn.Module:
    """One layer, built from its weights' shapes (Conv2d, Linear) once `spec` agrees with them."""
    if not isinstance(spec, dict):
        raise CheckpointError(f"{where}: layers[{index}] is {repr(spec)[:60]}: expected a layer spec")
    kind = spec.get("type")
    if kind == "ReLU":
        return nn.ReLU()
    if kind == "Flatten":
        start, end = (_field(spec, key, int, where, f"layers[{index}].") for key in ("start", "end"))
        if not (-4 <= start <= 3 and -4 <= end <= 3):
            raise CheckpointError(f"{where}: layers[{index}] flattens dimensions {start}..{end}: not of a batch of "
                                  "observations")
        return nn.Flatten(start, end)
    if kind not in ("Conv2d", "Linear"):
        raise CheckpointError(f"{where}: layers[{index}] is of unknown type {kind!r}")
    conv = kind == "Conv2d"
    key = f"{index}.weight"
    if key not in state:
        raise CheckpointError(f"{where}: layers[{index}] ({kind}) has no {key} in the state dict")
    weight = check_tensor(state[key], f"state_dict[{key!r}]", where, CheckpointError, ndim=4 if conv else 2)
    has_bias = _field(spec, "bias", bool, where, f"layers[{index}].")
    if has_bias != (f"{index}.bias" in state):
        raise CheckpointError(f"{where}: layers[{index}] says bias={has_bias}, the state dict "
                              f"{'lacks' if has_bias else 'holds'} {index}.bias")
    if has_bias:
        bias = check_tensor(state[f"{index}.bias"], f"state_dict['{index}.bias']", where, CheckpointError, ndim=1)
        if len(bias) != weight.shape[0] or bias.dtype != weight.dtype:
            raise CheckpointError(f"{where}: state_dict['{index}.bias'] has {len(bias)} {bias.dtype} values for "
                                  f"{weight.shape[0]} {weight.dtype} outputs")
    sizes = {"out": weight.shape[0], "in": weight.shape[1], **({"kernel": list(weight.shape[2:])} if conv else {})}
    for field, actual in sizes.items():
        if spec.get(field) != actual:
            raise CheckpointError(f"{where}: layers[{index}].{field} is {spec.get(field)!r} but its weights give {actual}")
    if not conv:
        return nn.Linear(sizes["in"], sizes["out"], bias=has_bias, dtype=weight.dtype)
    stride, padding = (_field(spec, key, list, where, f"layers[{index}].") for key in ("stride", "padding"))
    if (len(stride) != 2 or len(padding) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in stride + padding)
            or min(stride) < 1 or not all(0 <= p < k for p, k in zip(padding, sizes["kernel"]))):
        raise CheckpointError(f"{where}: layers[{index}] has stride {stride} and padding {padding}: expected two "
                              "strides >= 1 and two paddings from 0 to the kernel size - 1")
    return nn.Conv2d(sizes["in"], sizes["out"], tuple(sizes["kernel"]), tuple(stride), tuple(padding), bias=has_bias,
                     dtype=weight.dtype)


def _scales(payload: dict, network: nn.Sequential, where: str) -> LayerScales:
    stored = _field(payload, "scales", dict, where)
    known = {field.name for field in dataclasses.fields(LayerScales)}
    defaults = {f.name for f in dataclasses.fields(LayerScales) if f.default is not dataclasses.MISSING}
    unknown, missing = sorted(set(stored) - known), sorted(known - defaults - set(stored))
    if unknown or missing:
        raise CheckpointError(f"{where}: scales {'hold unknown fields ' + ', '.join(map(str, unknown)) if unknown else ''}"
                              f"{'; ' if unknown and missing else ''}{'lack ' + ', '.join(missing) if missing else ''}")
    hidden = tuple(check_tensor(s, f"scales.hidden[{i}]", where, CheckpointError)
                   for i, s in enumerate(_field(stored, "hidden", list, where, "scales.")))
    return check_scales(LayerScales(**{**stored, "hidden": hidden}), spiking_channels(network), where, CheckpointError)


def _options(payload: dict, where: str) -> dict:
    """The conversion options, each a keyword of `convert` (their values `convert` checks)."""
    options = _field(payload, "options", dict, where)
    known = {name for name, p in inspect.signature(convert).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "scales"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown option(s) {', '.join(map(str, unknown))} (known: {', '.join(sorted(known))})")
    input_max = options.get("input_max")
    if input_max is not None and (isinstance(input_max, bool) or not isinstance(input_max, (int, float))
                                  or not (math.isfinite(input_max) and input_max > 0)):
        raise CheckpointError(f"{where}: option input_max is {input_max!r}: expected a positive finite number or None")
    return options


def _bias_shifts(payload: dict, sizes: list[int], where: str) -> list[torch.Tensor]:
    """The tuned bias corrections: none, or one finite vector per stage of that stage's outputs."""
    shifts = _field(payload, "bias_shifts", list, where, default=[])
    if shifts and len(shifts) != len(sizes):
        raise CheckpointError(f"{where}: {len(shifts)} bias_shifts for {len(sizes)} stages")
    checked = [check_tensor(s, f"bias_shifts[{i}]", where, CheckpointError, ndim=1) for i, s in enumerate(shifts)]
    for index, (shift, size) in enumerate(zip(checked, sizes)):
        if len(shift) != size:
            raise CheckpointError(f"{where}: bias_shifts[{index}] has {len(shift)} values for {size} outputs")
    return checked
