"""Fused inference scans in C: the IF scan and the binary code's fire / integrate loops, one call each.

In Python every time step of a neuron layer costs a few tensor dispatches (add, compare, subtract)
of some microseconds each; with one observation per decision (an agent acting) that overhead, not
the arithmetic, sets the speed. These loops do the same floating-point operations in the same order
as the Python references (`spiking.if_scan`, `binary_coding.fire` / `integrate`; no fused
multiply-add, no fast-math), so spikes and membranes are bit-identical (tests check it), and the
neurons are walked in cache-sized blocks with time inside.

The C source below is compiled once per machine with the system's C compiler (`$CC`, else `cc`,
`gcc` or `clang`: about 0.3 s) into `$DQN2SNN_CACHE` (default `~/.cache/dqn2snn_plugin`) and loaded
with ctypes: no build step at install, no Python headers, no ninja. Where that fails (no compiler,
not Linux/macOS, a read-only cache) one RuntimeWarning says so and the Python loops run instead,
with the same results. `DQN2SNN_FUSED_SCAN=0` turns the fused loops off without a warning, and
`with fused_scan.switched_off():` does so for a block (to time or check against the Python loops).
Only contiguous float32 / float64 CPU tensors outside autograd take the fused path.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = r"""
#include <stdint.h>
#include <math.h>
#define BLOCK 4096 /* neurons per block: their membranes stay in L1/L2 over all steps */
#define LOOPS(real, suffix)                                                                         \
/* IF over `steps`: h = v + I_t; s_t = [h >= th]; v = h - s_t * th. step_stride 0: constant I */    \
void if_scan_##suffix(const real *restrict current, int64_t step_stride, real *restrict v,          \
                      real *restrict spikes, int64_t steps, int64_t n, double threshold) {          \
    const real th = (real)threshold;                                                                \
    for (int64_t start = 0; start < n; start += BLOCK) {                                            \
        const int64_t end = start + BLOCK < n ? start + BLOCK : n;                                  \
        for (int64_t t = 0; t < steps; t++) {                                                       \
            const real *c = current + t * step_stride;                                              \
            real *s = spikes + t * n;                                                               \
            for (int64_t i = start; i < end; i++) {                                                 \
                const real h = v[i] + c[i];                                                         \
                const real k = (real)(h >= th);                                                     \
                s[i] = k;                                                                           \
                v[i] = h - k * th;                                                                  \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
/* binary code, most significant bit first: s_t = [v >= 2^(bits-1-t)]; v -= s_t * 2^(bits-1-t) */   \
void fire_##suffix(real *restrict v, real *restrict spikes, int64_t bits, int64_t n) {              \
    for (int64_t start = 0; start < n; start += BLOCK) {                                            \
        const int64_t end = start + BLOCK < n ? start + BLOCK : n;                                  \
        for (int64_t t = 0; t < bits; t++) {                                                        \
            const real th = (real)ldexp(1.0, (int)(bits - 1 - t));                                  \
            real *s = spikes + t * n;                                                               \
            for (int64_t i = start; i < end; i++) {                                                 \
                const real k = (real)(v[i] >= th);                                                  \
                s[i] = k;                                                                           \
                v[i] = v[i] - k * th;                                                               \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
/* a membrane that doubles before each step's input: v = 2 v + I_t, from v = 0 */                   \
void integrate_##suffix(const real *restrict current, real *restrict v, int64_t steps, int64_t n) { \
    for (int64_t start = 0; start < n; start += BLOCK) {                                            \
        const int64_t end = start + BLOCK < n ? start + BLOCK : n;                                  \
        for (int64_t i = start; i < end; i++) v[i] = (real)0;                                       \
        for (int64_t t = 0; t < steps; t++) {                                                       \
            const real *c = current + t * n;                                                        \
            for (int64_t i = start; i < end; i++) v[i] = v[i] * (real)2 + c[i];                     \
        }                                                                                           \
    }                                                                                               \
}
LOOPS(float, f32)
LOOPS(double, f64)
"""
# no contraction into fused multiply-adds (exact IEEE order); no FP traps lets gcc vectorise the compares
FLAGS = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math"]
SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
SIGNATURES = {"if_scan": [_P, _I, _P, _P, _I, _I, _D], "fire": [_P, _P, _I, _I], "integrate": [_P, _P, _I, _I]}


def cache_dir() -> Path:
    """Where the compiled library is kept: $DQN2SNN_CACHE, else ~/.cache/dqn2snn_plugin."""
    return Path(os.environ.get("DQN2SNN_CACHE") or Path.home() / ".cache" / "dqn2snn_plugin")


def compiler() -> str | None:
    """The C compiler to use: $CC, else the first of cc, gcc, clang on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(directory: Path) -> Path:
    """Compile SOURCE into `directory` (atomically: concurrent processes may race) and return the path."""
    cc = compiler()
    if cc is None:
        raise OSError("no C compiler found (set $CC, or install gcc or clang)")
    key = hashlib.sha256("\0".join([SOURCE, cc, *FLAGS]).encode()).hexdigest()[:16]
    target = directory / f"fused_scan-{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        source, built = Path(tmp) / "fused_scan.c", Path(tmp) / "fused_scan.so"
        source.write_text(SOURCE)
        done = subprocess.run([cc, *FLAGS, str(source), "-o", str(built), "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"{cc} failed: {done.stderr.strip()[-500:]}")
        os.replace(built, target)
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled loops, or None (warned once) where they cannot be built or loaded."""
    if os.environ.get("DQN2SNN_FUSED_SCAN", "1") == "0":
        return None
    try:
        if sys.platform not in ("linux", "darwin"):
            raise OSError(f"fused scans are built on Linux and macOS only, not {sys.platform}")
        lib = ctypes.CDLL(str(build(cache_dir())))
        for name, argtypes in SIGNATURES.items():
            for suffix in SUFFIX.values():
                function = getattr(lib, f"{name}_{suffix}")
                function.argtypes, function.restype = argtypes, None
        return lib
    except OSError as error:
        warnings.warn(f"dqn2snn_plugin: fused C scans unavailable ({error}); simulating with Python loops "
                      "instead (same spikes, slower at small batches). DQN2SNN_FUSED_SCAN=0 silences this.",
                      RuntimeWarning, stacklevel=2)
        return None


_switched_off = False


@contextlib.contextmanager
def switched_off():
    """Run the Python loops (the reference) inside this block, e.g. to compare speeds or results."""
    global _switched_off
    before, _switched_off = _switched_off, True
    try:
        yield
    finally:
        _switched_off = before


def _usable(*tensors: torch.Tensor) -> ctypes.CDLL | None:
    """The library, if all `tensors` are CPU float32/float64 of one dtype and no gradient is wanted."""
    dtype = tensors[0].dtype
    if _switched_off or dtype not in SUFFIX or any(t.device.type != "cpu" or t.dtype != dtype for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return library()


def if_scan(current: torch.Tensor, v: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`spiking.if_scan` in one call: spikes [T, ...] and final membrane, or None where not usable."""
    lib = _usable(current, v)
    if lib is None or current.ndim < 1 or current.shape[1:] != v.shape:
        return None
    steps = current.shape[0]
    if steps > 1 and current.stride(0) == 0:  # a constant current expanded over time: read it once
        current, step_stride = current[0].contiguous(), 0
    else:
        current, step_stride = current.contiguous(), v.numel()
    v = v.contiguous().clone()
    spikes = torch.empty((steps, *v.shape), dtype=v.dtype)
    getattr(lib, f"if_scan_{SUFFIX[v.dtype]}")(current.data_ptr(), step_stride, v.data_ptr(), spikes.data_ptr(),
                                                 steps, v.numel(), float(threshold))
    return spikes, v


def fire(v: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`binary_coding.fire` in one call: spikes [bits, ...] and the residual, or None where not usable."""
    lib = _usable(v)
    if lib is None:
        return None
    v = v.contiguous().clone()
    spikes = torch.empty((bits, *v.shape), dtype=v.dtype)
    getattr(lib, f"fire_{SUFFIX[v.dtype]}")(v.data_ptr(), spikes.data_ptr(), bits, v.numel())
    return spikes, v


def integrate(current: torch.Tensor) -> torch.Tensor | None:
    """`binary_coding.integrate` in one call: sum_t 2**(T-1-t) current[t] by doubling, or None."""
    lib = _usable(current)
    if lib is None or current.ndim < 1:
        return None
    current = current.contiguous()
    v = torch.empty(current.shape[1:], dtype=current.dtype)
    getattr(lib, f"integrate_{SUFFIX[v.dtype]}")(current.data_ptr(), v.data_ptr(), current.shape[0], v.numel())
    return v
