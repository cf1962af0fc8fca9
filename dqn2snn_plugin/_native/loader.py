"""Building, verifying and loading the compiled loops (`fused_scan.c`): compiled once per machine and CPU
at first use, checked before every load, and called through the prototypes of `fused_scan.h`.

Why this route (issue 25). The loops are plain C with no Python C-API, so the choice is how to build
and how to call them:
- A compiled extension built at install (setuptools `ext_modules`, numpy-style runtime CPU dispatch)
  would need a compiler and Python headers at `pip install`, one wheel per Python version, and
  hand-written dispatch (`target_clones`) to keep AVX-512; a machine without a compiler could not even
  install the package. That is the route for published wheels (cibuildwheel, as ale-py), not for an
  editable checkout.
- torch's `cpp_extension.load` compiles C++ against torch's headers with ninja: a C++ toolchain and
  ninja where plain `cc` serves today, and torch's headers parsed at first use.
- numba would add llvmlite (an LLVM build) and a rewrite of the 430 lines of C kernels that must stay
  bit-identical to the references.
- cffi in ABI mode (chosen) keeps the build a single `cc` call, once per machine and CPU (1.8 to 7.7 s
  measured here, on 2 shared cores; `python -m dqn2snn_plugin._native` builds ahead of
  time and reports it), and costs one small, widely used dependency. The interface is described once,
  in `fused_scan.h`: the C file includes it, so the compiler checks every definition against its
  prototype, and cffi reads the same prototypes (`ffi.cdef`), so a call with the wrong number or type
  of arguments raises TypeError instead of corrupting memory (tests/test_native_build.py). The
  simulation is as fast as with ctypes (benchmarks/simulation_speed.py, run before and after this
  change); `-march=native` stays: the library is built for the CPU it runs on.

Safety. The library lives in `cache_dir()/native` (`$DQN2SNN_CACHE`, default `~/.cache/dqn2snn`),
created with mode 0700; where that directory is not the user's own or others may write it, or a folder
above it lets others rename it (a team cache, a shared folder without /tmp's sticky bit), nothing is
built or loaded there (one warning; the Python loops run). Builds and loads take a file lock
(`filelock`, as torch's cpp_extension and Brian2 do), so processes starting at once build once.
A library is loaded only after this process checked it: a regular file owned by the user, not
writable by group or others, whose SHA-256 equals the digest recorded beside it (`.json`) when it was
built. One that fails those checks (planted, truncated, replaced) is never loaded; one that loads but
lacks a function of the header (another ELF) is unloaded; either is deleted and rebuilt once, with one
RuntimeWarning, and a rebuild that fails again leaves the Python loops.
The check and the load happen under the lock, in a directory only the user can write.

OpenMP: with `-fopenmp` the library links libgomp by soname; once torch is loaded that is torch's own
`torch/lib/libgomp.so.1`, so both share one thread pool (`torch.set_num_threads` sets both). A torch
built with another runtime (Intel's libiomp, LLVM's libomp on macOS or conda) gets two pools;
`python -m dqn2snn_plugin._native` lists the runtimes loaded in the process.

Where the library cannot be built or loaded (no compiler, not Linux/macOS, a refused cache) one
RuntimeWarning says so and the Python loops run instead (same spikes, slower);
`DQN2SNN_NATIVE=require` makes that an error (`NativeCodeError`), for benchmarks that must not time
the Python loops by accident, and `DQN2SNN_FUSED_SCAN=0` switches the library off without a warning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import cffi

from dqn2snn_plugin.errors import ConfigError, NativeCodeError
from dqn2snn_plugin.io.cache import cache_dir

SOURCE_FILE = Path(__file__).with_name("fused_scan.c")  # the C source, installed with the package
HEADER_FILE = Path(__file__).with_name("fused_scan.h")  # its prototypes, read by the compiler and by cffi
# no contraction into fused multiply-adds (exact IEEE order); no FP traps lets gcc vectorise the compares
FLAGS = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math"]
# this CPU's vector units (AVX-512 / AVX2 / NEON) and OpenMP threads, tried first and dropped where the
# compiler refuses them. -march=native makes the library specific to this CPU: its cache key holds the
# CPU's identity (a home directory shared by a cluster's nodes gets one library per kind of CPU)
FAST = ["-march=native", "-mprefer-vector-width=512", "-fopenmp"]
REAL = {"f32": "float", "f64": "double"}  # the two instantiations of fused_scan.c: suffix -> C type
MODES = ("auto", "require")  # DQN2SNN_NATIVE
LOCK_TIMEOUT_S = 600.0  # longest wait for another process's build


class UnverifiedLibraryError(OSError):
    """A cached library failed a check before loading (owner, mode, digest, functions): it is not used."""


@functools.cache
def source() -> str:
    """The C source (read once)."""
    return SOURCE_FILE.read_text()


@functools.cache
def header() -> str:
    """The prototypes of the C functions, written over `real` and NAME(f) (read once)."""
    return HEADER_FILE.read_text()


def functions() -> list[str]:
    """The names of the C functions the header declares, with their suffixes (if_scan_f32, ...)."""
    names = re.findall(r"^\w+ NAME\((\w+)\)\(", header(), re.MULTILINE)
    return [f"{name}_{suffix}" for suffix in REAL for name in names]


@functools.cache
def interface() -> cffi.FFI:
    """cffi's view of the header: both instantiations, NAME(f) and `real` spelled out as the C file does."""
    ffi = cffi.FFI()
    ffi.cdef("".join(re.sub(r"\breal\b", c_type, re.sub(r"\bNAME\((\w+)\)", rf"\1_{suffix}", header()))
                     for suffix, c_type in REAL.items()))
    return ffi


def compiler() -> str | None:
    """The C compiler to use: $CC, else the first of cc, gcc, clang on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cpu_identity() -> str:
    """The CPU's model and instruction-set flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return f"{platform.machine()} {platform.processor()} {platform.platform()}"


def library_name(cc: str) -> str:
    """The cached library's file name: a hash of what it is built from (source, header, compiler,
    flags, CPU). Anyone can compute it, which is why a file of that name is verified, never trusted."""
    key = hashlib.sha256("\0".join([source(), header(), cc, *FLAGS, *FAST, cpu_identity()]).encode())
    return f"fused_scan-{key.hexdigest()[:16]}.so"


def native_dir() -> Path:
    """Where the library is cached: `native/` in the plugin's cache directory."""
    return cache_dir() / "native"


def private(directory: Path) -> Path:
    """`directory`, created with mode 0700 where missing, as a resolved path; OSError where it is not the
    user's own or others may write to it, or where a folder above it is neither the user's nor root's or
    lets others rename what it holds (writable by others without the sticky bit of /tmp): a library
    there could be swapped by them between its check and its load."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = directory.resolve()
    for place in (directory, *directory.parents):
        info, above = place.stat(), place != directory
        owner_ok = info.st_uid == os.geteuid() or above and info.st_uid == 0
        shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (above and info.st_mode & stat.S_ISVTX)
        if not owner_ok or shared:
            raise OSError(f"{place} is {'writable by others' if owner_ok else 'not yours'}: native code is neither "
                          "built nor loaded under it (point DQN2SNN_CACHE at a directory of your own)")
    return directory


def record_file(library: Path) -> Path:
    """The JSON record written beside a library when it was built: its digest and how it was built."""
    return library.with_suffix(".json")


def build(directory: Path) -> Path:
    """The verified library in `directory` (see `open_library`), compiled first where it is missing or
    failed its checks; its path."""
    return open_library(directory)[0]


def open_library(directory: Path) -> tuple[Path, Any]:
    """The library in `directory` and its loaded functions (a cffi library), under the directory's file
    lock: compiled where missing; where it fails a check (`load`), deleted and rebuilt once, with one
    RuntimeWarning. OSError where it cannot be built, or fails again after the rebuild."""
    from filelock import FileLock  # 50 ms to import: only when a library is opened

    cc = compiler()
    if cc is None:
        raise OSError("no C compiler found (set $CC, or install gcc or clang)")
    directory = private(directory)
    target = directory / library_name(cc)
    with FileLock(directory / "fused_scan.lock", timeout=LOCK_TIMEOUT_S):
        if not target.exists():
            compile_into(target, cc)
        try:
            return target, load(target)
        except UnverifiedLibraryError as refused:
            warnings.warn(f"dqn2snn_plugin: refused the cached native library ({refused}); rebuilding it",
                          RuntimeWarning, stacklevel=3)
        for stale in (target, record_file(target)):
            stale.unlink(missing_ok=True)
        compile_into(target, cc)
        return target, load(target)


def compile_into(target: Path, cc: str) -> None:
    """Compile fused_scan.c into `target` (mode 0700) and record its digest in `record_file(target)`,
    both moved into place only when complete."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        (work / SOURCE_FILE.name).write_text(source())
        (work / HEADER_FILE.name).write_text(header())
        built, start = work / "fused_scan.so", time.perf_counter()
        for flags in (FLAGS + FAST, FLAGS):
            done = subprocess.run([cc, *flags, str(work / SOURCE_FILE.name), "-o", str(built), "-lm"],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                break
        else:
            raise OSError(f"{cc} failed: {done.stderr.strip()[-500:]}")  # the plain flags failed too
        built.chmod(0o700)
        record = {"sha256": hashlib.sha256(built.read_bytes()).hexdigest(), "compiler": cc, "flags": flags,
                  "openmp": "-fopenmp" in flags, "build_s": round(time.perf_counter() - start, 3),
                  "cpu": hashlib.sha256(cpu_identity().encode()).hexdigest()[:16]}
        (work / "record.json").write_text(json.dumps(record, indent=1))
        (work / "record.json").chmod(0o600)
        os.replace(work / "record.json", record_file(target))
        os.replace(built, target)


def _owned(path: Path) -> os.stat_result:
    """`path`'s status where it is a regular file (not a link) of the user's that others cannot write;
    UnverifiedLibraryError otherwise."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise UnverifiedLibraryError(f"{path.name} is missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnverifiedLibraryError(f"{path.name} is not a regular file")
    if info.st_uid != os.geteuid():
        raise UnverifiedLibraryError(f"{path.name} is owned by another user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnverifiedLibraryError(f"{path.name} is writable by group or others")
    return info


def read_record(library: Path) -> dict:
    """The record written when `library` was built (checked like the library itself)."""
    path = record_file(library)
    _owned(path)
    try:
        record = json.loads(path.read_text())
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise UnverifiedLibraryError(f"{path.name} holds no digest")
    return record


def load(library: Path) -> Any:
    """`library` loaded through the header's prototypes, after checking it: owned by the user, not
    writable by others, its SHA-256 the digest recorded when it was built, every function present.
    UnverifiedLibraryError where a check fails (the library is then not used)."""
    _owned(library)
    if hashlib.sha256(library.read_bytes()).hexdigest() != read_record(library)["sha256"]:
        raise UnverifiedLibraryError(f"{library.name} differs from the digest recorded when it was built "
                                     "(truncated or replaced)")
    ffi = interface()
    try:
        lib = ffi.dlopen(str(library))
    except OSError as error:
        raise UnverifiedLibraryError(f"{library.name} does not load: {error}") from None
    missing = [name for name in functions() if not hasattr(lib, name)]
    if missing:
        ffi.dlclose(lib)  # unloaded, so that a rebuild at the same path is loaded afresh
        raise UnverifiedLibraryError(f"{library.name} lacks {', '.join(missing[:3])}")
    return lib


def mode() -> str:
    """`$DQN2SNN_NATIVE`: auto (default: the Python loops where the library is unavailable, with one
    warning) or require (NativeCodeError instead); ConfigError for anything else."""
    value = os.environ.get("DQN2SNN_NATIVE", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ConfigError(f"DQN2SNN_NATIVE={value!r}: expected one of {', '.join(MODES)} "
                          "(DQN2SNN_FUSED_SCAN=0 switches the compiled loops off)")
    return value


@functools.cache
def library() -> Any:
    """The compiled loops (a cffi library), or None where switched off (DQN2SNN_FUSED_SCAN=0) or
    unavailable (one RuntimeWarning; NativeCodeError under DQN2SNN_NATIVE=require)."""
    required = mode() == "require"
    if os.environ.get("DQN2SNN_FUSED_SCAN", "1") == "0":
        if required:
            raise NativeCodeError("DQN2SNN_NATIVE=require, but DQN2SNN_FUSED_SCAN=0 switches the compiled loops off")
        return None
    try:
        if sys.platform not in ("linux", "darwin"):
            raise OSError(f"fused scans are built on Linux and macOS only, not {sys.platform}")
        return open_library(native_dir())[1]
    except OSError as error:
        if required:
            raise NativeCodeError(f"compiled C loops unavailable under DQN2SNN_NATIVE=require: {error}") from error
        warnings.warn(f"dqn2snn_plugin: compiled C loops unavailable ({error}); simulating with Python loops "
                      "and dense synapses instead (same spikes, slower). DQN2SNN_FUSED_SCAN=0 silences this.",
                      RuntimeWarning, stacklevel=2)
        return None
