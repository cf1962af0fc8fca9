"""Named exceptions of the plugin: every user-facing failure is one of these, with a clear message."""


class Dqn2SnnError(Exception):
    """Base class of every error this plugin raises on purpose."""


class CheckpointError(Dqn2SnnError):
    """A checkpoint cannot be read: not a zip, truncated, missing files, wrong algorithm, bad tensors."""


class UnsupportedLayerError(Dqn2SnnError):
    """The network holds a layer the conversion cannot handle (the message names it)."""


class CalibrationError(Dqn2SnnError):
    """Calibration data is missing, empty or has the wrong shape."""


class NormalizationError(Dqn2SnnError):
    """A layer scale (lambda) came out zero, negative or non-finite."""


class ObservationError(Dqn2SnnError):
    """An observation batch does not match what the network expects."""


class ConfigError(Dqn2SnnError):
    """An option is out of range (T <= 0, percentile outside (0, 100], unknown backend, ...)."""


class EnvIdError(Dqn2SnnError):
    """An environment id is unknown or does not match the checkpoint (e.g. action count)."""


class ResultsError(Dqn2SnnError):
    """A results file or directory cannot be used (unwritable, or from an incompatible run)."""


class ClusterError(Dqn2SnnError):
    """Ray cannot be reached, has no node that fits a cell, or lost a cell's worker too often."""


class NirError(Dqn2SnnError):
    """An SNN cannot be written as a NIR graph (binary coding, Poisson input), or a NIR graph is not one
    that `from_nir` can rebuild (the message says why and what to use instead)."""


class NativeCodeError(Dqn2SnnError):
    """The compiled C loops are required (DQN2SNN_NATIVE=require) but cannot be built or loaded here."""
