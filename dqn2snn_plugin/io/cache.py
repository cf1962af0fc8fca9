"""The one cache directory of the plugin: calibration frames and the compiled native library."""

from __future__ import annotations

import os
from pathlib import Path

from dqn2snn_plugin.io.results import check_output_dir

CACHE_ENV = "DQN2SNN_CACHE"


def cache_dir() -> Path:
    """`$DQN2SNN_CACHE` if set, else `~/.cache/dqn2snn`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dqn2snn")


def check_cache_dir() -> Path:
    """`cache_dir()`, refused before any work (ResultsError naming where it comes from) when no folder
    can be written there: a file, below a file, or an unwritable place. Nothing is created."""
    where = f"{CACHE_ENV}={os.environ[CACHE_ENV]}" if os.environ.get(CACHE_ENV) else \
        f"the cache folder (set {CACHE_ENV} to move it)"
    return check_output_dir(cache_dir(), flag=where)
