"""The one cache directory of the plugin: calibration frames and the compiled native library."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$DQN2SNN_CACHE` if set, else `~/.cache/dqn2snn`."""
    return Path(os.environ.get("DQN2SNN_CACHE") or Path.home() / ".cache" / "dqn2snn")
