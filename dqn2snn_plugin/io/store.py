"""Save a converted SNN to one file and rebuild it later, without calibration data or the original file.

The file (`torch.save` of plain dicts, lists and tensors, so `torch.load(weights_only=True)` reads it
and no code can hide in it) holds the DQN's layers and weights, the layer scales and the conversion
options (a residual carry as its text "SCALE,CLIP"), and the bias corrections of a tuned SNN. `load_snn` refolds the scales into the weights through `convert(..., scales=...)`, which is
deterministic, so the reloaded SNN gives the same outputs as the saved one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dqn2snn_plugin.adapters.archive import load_weights_only
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.conversion import INITIAL_MEMBRANES, convert
from dqn2snn_plugin.errors import CheckpointError, ResultsError
from dqn2snn_plugin.normalization import LayerScales
from dqn2snn_plugin.io.results import write_file
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


def _build_layer(spec: dict) -> nn.Module:
    kind = spec["type"]
    if kind == "Conv2d":
        return nn.Conv2d(spec["in"], spec["out"], tuple(spec["kernel"]), tuple(spec["stride"]), tuple(spec["padding"]),
                         bias=spec["bias"])
    if kind == "Linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    if kind == "Flatten":
        return nn.Flatten(spec["start"], spec["end"])
    if kind == "ReLU":
        return nn.ReLU()
    raise CheckpointError(f"unknown layer type {kind!r} in a saved SNN")


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
    path = Path(path)
    if path.is_dir():
        raise ResultsError(f"{path} is a folder: save the SNN to a file path such as {path / 'snn.pt'}")
    if not path.parent.is_dir():
        raise ResultsError(f"cannot save {path}: the folder {path.parent} does not exist (create it first)")
    write_file(path, lambda tmp: torch.save(payload, tmp))  # atomic: never a half-written file


def load_snn(path: str | Path, *, device: str = "cpu") -> tuple[SpikingQNetwork, DQNCheckpoint]:
    """Rebuild the SNN saved by `save_snn`, and the network it was converted from: the DQN, or for a
    distilled SNN (scales.percentile "distilled T=...") the distilled copy, not the user's DQN."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: not a saved dqn2snn SNN (no such file: save one with save_snn or "
                              "`dqn2snn convert`)")
    try:
        payload = load_weights_only(Path(path), str(path))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: not a saved dqn2snn SNN ({str(exc).removeprefix(f'{path}: ')})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a saved dqn2snn SNN (format {FORMAT} expected)")
    network = nn.Sequential(*(_build_layer(spec) for spec in payload["layers"]))
    network.load_state_dict(payload["state_dict"])
    info = payload["checkpoint"]
    checkpoint = DQNCheckpoint(
        q_network=network.to(device).eval(), n_actions=info["n_actions"],
        observation_shape=tuple(info["observation_shape"]), policy=info["policy"], algorithm=info["algorithm"],
        sb3_version=info["sb3_version"], env_id=info["env_id"], source=info["source"],
        # files saved before these were recorded: the defaults (`DQNCheckpoint`, `LayerScales`)
        input_scaling=info.get("input_scaling", DQNCheckpoint.input_scaling),
        assumptions=tuple(info.get("assumptions", ())),
    )
    scales = LayerScales(**{**payload["scales"], "hidden": tuple(s.to(device) for s in payload["scales"]["hidden"])})
    snn = convert(checkpoint, None, scales=scales, **payload["options"])
    for stage, shift in enumerate(payload.get("bias_shifts", [])):
        if shift.abs().sum() > 0:  # corrections from dqn2snn_plugin.improve.tuning
            snn.shift_bias(stage, shift)
    return snn, checkpoint
