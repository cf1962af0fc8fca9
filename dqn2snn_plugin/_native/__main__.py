"""`python -m dqn2snn_plugin._native`: build the compiled loops into the cache now (or verify the cached
build) and say how they were built: compiler, flags, OpenMP, CPU key, path, digest, and the OpenMP
runtimes loaded in this process (more than one means two thread pools, see loader.py). Exits 1 with one
line where they cannot be built or loaded here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch  # loaded first, as in a simulation: its OpenMP runtime is the one the library should share

from dqn2snn_plugin._native import loader


def openmp_runtimes() -> list[str]:
    """The OpenMP runtimes mapped into this process (Linux: from /proc/self/maps; else empty)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted(set(re.findall(r"\S*lib(?:gomp|iomp5|omp)[^/\s]*\.so[^/\s]*$", maps, re.MULTILINE)))


def main() -> int:
    """Build or verify the library in the cache and print how it was built; 1 where it is unavailable."""
    try:
        path, _ = loader.open_library(loader.native_dir())
        record = loader.read_record(path)
    except OSError as error:
        print(f"dqn2snn_plugin: compiled C loops unavailable: {error}", file=sys.stderr)
        return 1
    print(f"library   {path}\nsha256    {record['sha256']}\ncompiler  {record['compiler']}\n"
          f"flags     {' '.join(record['flags'])}\nopenmp    {'yes' if record['openmp'] else 'no'}\n"
          f"cpu key   {record['cpu']}\nbuild     {record['build_s']} s\n"
          f"runtimes  {', '.join(openmp_runtimes()) or 'none found'} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
