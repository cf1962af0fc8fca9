"""dqn2snn_plugin: turn trained Deep Q-Networks into event-driven spiking Q-networks.

The data flows load -> calibrate -> normalise -> convert -> simulate -> measure:

    import dqn2snn_plugin as d2s
    ckpt = d2s.load_dqn("dqn-BreakoutNoFrameskip-v4.zip")
    states = d2s.collect_observations(ckpt, n_frames=2000)
    snn = d2s.convert(ckpt, states, percentile=99.9)
    actions = snn.act(states[:8], T=64)
    print(d2s.agreement(ckpt, snn, states[-500:], T=64).rate)

Public names are imported lazily so that `import dqn2snn_plugin` stays cheap.
"""

from importlib import import_module
from typing import Any

from dqn2snn_plugin.errors import (
    CalibrationError,
    CheckpointError,
    ClusterError,
    ConfigError,
    Dqn2SnnError,
    EnvIdError,
    NirError,
    NormalizationError,
    ObservationError,
    ResultsError,
    UnsupportedLayerError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "DQNCheckpoint": "dqn2snn_plugin.checkpoint",
    "load_dqn": "dqn2snn_plugin.checkpoint",
    "collect_observations": "dqn2snn_plugin.calibration",
    "layer_scales": "dqn2snn_plugin.normalization",
    "convert": "dqn2snn_plugin.conversion",
    "SpikingQNetwork": "dqn2snn_plugin.network",
    "agreement": "dqn2snn_plugin.metrics",
    "tune": "dqn2snn_plugin.improve.tuning",
    "distill": "dqn2snn_plugin.improve.distillation",
    "to_nir": "dqn2snn_plugin.io.nir_graph",
    "from_nir": "dqn2snn_plugin.io.nir_graph",
    "save_nir": "dqn2snn_plugin.io.nir_graph",
    "save_snn": "dqn2snn_plugin.io.store",
    "load_snn": "dqn2snn_plugin.io.store",
    "play": "dqn2snn_plugin.envs.play",
    "parse_protocol": "dqn2snn_plugin.envs.protocol",
    "snn_cost": "dqn2snn_plugin.costs",
    "dqn_cost": "dqn2snn_plugin.costs",
    "EnergyTable": "dqn2snn_plugin.energy",
}

__all__ = [
    *_LAZY,
    "CalibrationError",
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "Dqn2SnnError",
    "EnvIdError",
    "NirError",
    "NormalizationError",
    "ObservationError",
    "ResultsError",
    "UnsupportedLayerError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dqn2snn_plugin' has no attribute {name!r}")
