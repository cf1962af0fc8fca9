"""Compiled inference loops in C: the IF scan, binary coding's fire / integrate, event-driven synapses
and spike bookkeeping, one call each.

In Python every time step of a neuron layer costs a few tensor dispatches (add, compare, subtract)
of some microseconds each; with one observation per decision (an agent acting) that overhead, not
the arithmetic, sets the speed. The neuron loops do the same floating-point operations in the same
order as the Python references (`spiking.if_scan`, `binary_coding.fire` / `integrate`; no fused
multiply-add, no fast-math), so spikes and membranes are bit-identical (tests check it), and the
neurons are walked in cache-sized blocks with time inside.

`events` is what makes the simulation event-driven: a synaptic layer reads its input spikes and,
for each one, adds that neuron's weight column to its targets, so its cost follows the spike count
(2-20 % of the neurons fire per step) instead of the layer's size. It sums in another order than a
dense pass, so its currents differ from one by rounding only (tests bound it; spikes are compared
in float64). `tally` counts spikes per layer, channel and synapse in one pass.

The C source below is compiled once per machine with the system's C compiler (`$CC`, else `cc`,
`gcc` or `clang`: about 0.5 s) into `$DQN2SNN_CACHE` (default `~/.cache/dqn2snn_plugin`) and loaded
with ctypes: no build step at install, no Python headers, no ninja. It is built for this CPU's
vector units and with OpenMP, which then shares torch's own thread pool (`torch.set_num_threads`
sets both); a compiler without either builds it plainly. Where building fails (no compiler, not
Linux/macOS, a read-only cache) one RuntimeWarning says so and the Python loops and dense passes
run instead, with the same spikes. `DQN2SNN_FUSED_SCAN=0` turns the compiled loops off without a
warning, and `with fused_scan.switched_off():` does so for a block (to time or check against the
Python loops). Only contiguous float32 / float64 CPU tensors outside autograd take the compiled path.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
/* the positions of the nonzero values of src[0 .. n), in order, into events (room for n + 16) */
static inline int64_t nonzero_f32(const float *restrict src, int64_t n, int32_t *restrict events) {
    int64_t count = 0, p = 0;
#ifdef __AVX512F__
    __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; p + 16 <= n; p += 16) {
        const __mmask16 set = _mm512_cmpneq_ps_mask(_mm512_loadu_ps(src + p), _mm512_setzero_ps());
        _mm512_storeu_si512((void *)(events + count), _mm512_maskz_compress_epi32(set, index));
        count += __builtin_popcount((unsigned)set);
        index = _mm512_add_epi32(index, _mm512_set1_epi32(16));
    }
#endif
    for (; p < n; p++) { events[count] = (int32_t)p; count += src[p] != 0.0f; }
    return count;
}
static inline int64_t nonzero_f64(const double *restrict src, int64_t n, int32_t *restrict events) {
    int64_t count = 0;
    for (int64_t p = 0; p < n; p++) { events[count] = (int32_t)p; count += src[p] != 0.0; }
    return count;
}
#define BLOCK 4096
#define MAX_PLANES 64 /* weighted planes summed per neuron; more take the plane-by-plane loop */ /* neurons per block: their membranes stay in L1/L2 over all steps */
#define PARALLEL _Pragma("omp parallel for schedule(static) num_threads(threads)")
#define LOOPS(real, suffix)                                                                         \
/* IF over `steps`: h = v + I_t; s_t = [h >= th]; v = h - s_t * th. step_stride 0: constant I */    \
void if_scan_##suffix(const real *restrict current, int64_t step_stride, real *restrict v,          \
                      real *restrict spikes, int64_t steps, int64_t n, double threshold,            \
                      int64_t threads) {                                                            \
    const real th = (real)threshold;                                                                \
    PARALLEL                                                                                        \
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
/* binary code of v = gate + offset, most significant bit first: s_t = [v >= 2^(bits-1-t)];        */ \
/* v -= s_t * 2^(bits-1-t); v ends as the residual */                                               \
void fire_##suffix(const real *restrict gate, double offset, real *restrict v, real *restrict spikes, \
                   int64_t bits, int64_t n, int64_t threads) {                                      \
    PARALLEL                                                                                        \
    for (int64_t start = 0; start < n; start += BLOCK) {                                            \
        const int64_t end = start + BLOCK < n ? start + BLOCK : n;                                  \
        for (int64_t i = start; i < end; i++) v[i] = gate[i] + (real)offset;                        \
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
void integrate_##suffix(const real *restrict current, real *restrict v, int64_t steps, int64_t n,  \
                        int64_t threads) {                                                          \
    PARALLEL                                                                                        \
    for (int64_t start = 0; start < n; start += BLOCK) {                                            \
        const int64_t end = start + BLOCK < n ? start + BLOCK : n;                                  \
        for (int64_t i = start; i < end; i++) v[i] = (real)0;                                       \
        for (int64_t t = 0; t < steps; t++) {                                                       \
            const real *c = current + t * n;                                                        \
            for (int64_t i = start; i < end; i++) v[i] = v[i] * (real)2 + c[i];                     \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
/* d += x * w over n targets; n = 64 and 32 (common channel counts) unrolled by the compiler */      \
static inline void add_scaled_##suffix(real *restrict d, const real *restrict w, real x, int64_t n) { \
    if (n == 64) for (int64_t i = 0; i < 64; i++) d[i] += x * w[i];                                 \
    else if (n == 32) for (int64_t i = 0; i < 32; i++) d[i] += x * w[i];                            \
    else for (int64_t i = 0; i < n; i++) d[i] += x * w[i];                                          \
}                                                                                                   \
/* d += x_j * w for j = 0 .. k-1 in turn, d loaded and stored once */                                \
static inline void add_spikes_##suffix(real *restrict d, const real *restrict w, const real *xs,     \
                                       int64_t k, int64_t n) {                                      \
    for (int64_t i = 0; i < n; i++) {                                                               \
        real sum = d[i];                                                                            \
        for (int64_t j = 0; j < k; j++) sum += xs[j] * w[i];                                        \
        d[i] = sum;                                                                                 \
    }                                                                                               \
}                                                                                                   \
/* event-driven synapses: out[r] = sum_q scale_q (bias + sum over the nonzero inputs x of plane q, in */ \
/* index order, of x times its weight column). in [planes, rows, cin, hin, win]; wt [cin, kh, kw,    */ \
/* cout] (one input tap's targets contiguous); out [rows, cout, hout, wout], summed channels-last in  */ \
/* a per-thread accumulator. Returns 2 without work if more than max_events inputs are nonzero.      */ \
int events_##suffix(const real *restrict in, int64_t planes, const double *restrict scales,         \
                    int64_t rows, int64_t cin, int64_t hin, int64_t win, const real *restrict wt,     \
                    const real *restrict bias, int64_t cout, int64_t kh, int64_t kw, int64_t sh,      \
                    int64_t sw, int64_t ph, int64_t pw, int64_t hout, int64_t wout,                   \
                    real *restrict out, int64_t max_events, int64_t threads) {                        \
    const int64_t plane = hout * wout, hw = hin * win, kk = kh * kw, width = 1 + 2 * kk;            \
    const int64_t nin = cin * hw, total = planes * rows * nin;                                       \
    int64_t nonzero = 0;                                                                            \
    _Pragma("omp parallel for schedule(static) num_threads(threads) reduction(+:nonzero)")          \
    for (int64_t i = 0; i < total; i++) nonzero += in[i] != (real)0;                                \
    if (nonzero > max_events) return 2;                                                             \
    /* per input position: its number of taps, then (weight offset, accumulator offset) pairs */      \
    int64_t *taps = calloc(hw * width, sizeof(int64_t));                                            \
    if (!taps) return 1;                                                                            \
    for (int64_t oy = 0; oy < hout; oy++)                                                           \
        for (int64_t ox = 0; ox < wout; ox++)                                                       \
            for (int64_t ky = 0; ky < kh; ky++)                                                     \
                for (int64_t kx = 0; kx < kw; kx++) {                                               \
                    const int64_t y = oy * sh - ph + ky, x = ox * sw - pw + kx;                     \
                    if (y < 0 || y >= hin || x < 0 || x >= win) continue;                           \
                    int64_t *t = taps + (y * win + x) * width;                                      \
                    t[1 + 2 * t[0]] = (ky * kw + kx) * cout;                                        \
                    t[2 + 2 * t[0]] = (oy * wout + ox) * cout;                                      \
                    t[0]++;                                                                         \
                }                                                                                   \
    real bias_scale = (real)0;                                                                      \
    for (int64_t q = 0; q < planes; q++) bias_scale += (real)scales[q];                             \
    /* work items: blocks of rows whose accumulators fit in L1 (32 KB; each input channel's weights   */ \
    /* are then read once per block), with fewer blocks than threads each block's output channels in */ \
    /* parts. Each output sums its inputs in (channel, plane, position) order, whatever the split   */ \
    /* and the thread count.                                                                         */ \
    int64_t block = (32768 / (int64_t)sizeof(real)) / (plane * cout);                              \
    const int64_t even = (rows + threads - 1) / threads;                                            \
    block = block < 1 ? 1 : block > even ? even : block;                                            \
    const int64_t blocks = (rows + block - 1) / block;                                              \
    const int64_t parts = blocks < threads && cout >= 2 * threads ? threads : 1;                     \
    int failed = 0;                                                                                 \
    _Pragma("omp parallel num_threads(threads) reduction(|:failed)")                                \
    {                                                                                               \
        real *acc = malloc(sizeof(real) * block * plane * cout);                                    \
        int32_t *events = malloc(sizeof(int32_t) * (hw + 16));                                      \
        failed = !acc || !events;                                                                   \
        _Pragma("omp for schedule(static)")                                                         \
        for (int64_t item = 0; item < blocks * parts; item++) {                                     \
            if (failed) continue;                                                                   \
            const int64_t r0 = item / parts * block, r1 = r0 + block < rows ? r0 + block : rows;   \
            const int64_t c0 = cout * (item % parts) / parts, c1 = cout * (item % parts + 1) / parts; \
            for (int64_t r = r0; r < r1; r++) {                                                     \
                real *a = plane == 1 ? out + r * cout : acc + (r - r0) * plane * cout;              \
                for (int64_t p = 0; p < plane; p++)                                                 \
                    for (int64_t co = c0; co < c1; co++)                                            \
                        a[p * cout + co] = bias ? bias[co] * bias_scale : (real)0;                  \
            }                                                                                       \
            for (int64_t c = 0; c < cin; c++) {                                                     \
                const real *wc = wt + c * kk * cout + c0;                                           \
                if (planes > 1 && planes <= MAX_PLANES && hw == 1) { /* fully connected, weighted */ \
                    for (int64_t r = r0; r < r1; r++) { /* planes: a neuron's spikes in turn, on its */ \
                        real xs[MAX_PLANES]; /* targets held in registers (read once, not per spike) */ \
                        int64_t k = 0;                                                              \
                        for (int64_t q = 0; q < planes; q++) {                                      \
                            const real x = in[(q * rows + r) * cin + c];                            \
                            xs[k] = x * (real)scales[q]; /* kept only if nonzero: no branch */      \
                            k += x != (real)0;                                                      \
                        }                                                                           \
                        if (k) add_spikes_##suffix(out + r * cout + c0, wc, xs, k, c1 - c0);        \
                    }                                                                               \
                    continue;                                                                       \
                }                                                                                   \
                for (int64_t q = 0; q < planes; q++) {                                              \
                    const real scale = (real)scales[q];                                             \
                    for (int64_t r = r0; r < r1; r++) {                                             \
                        const real *src = in + ((q * rows + r) * cin + c) * hw;                     \
                        real *a = (plane == 1 ? out + r * cout : acc + (r - r0) * plane * cout) + c0; \
                        if (hw == 1) { /* a fully connected input: one value */                     \
                            if (src[0] != (real)0) add_scaled_##suffix(a, wc, src[0] * scale, c1 - c0); \
                            continue;                                                               \
                        }                                                                           \
                        const int64_t n = nonzero_##suffix(src, hw, events);                        \
                        for (int64_t e = 0; e < n; e++) {                                           \
                            const real x = src[events[e]] * scale;                                  \
                            const int64_t *t = taps + events[e] * width;                            \
                            for (int64_t i = 0; i < t[0]; i++)                                      \
                                add_scaled_##suffix(a + t[2 + 2 * i], wc + t[1 + 2 * i], x, c1 - c0); \
                        }                                                                           \
                    }                                                                               \
                }                                                                                   \
            }                                                                                       \
            for (int64_t r = r0; r < r1 && plane > 1; r++) {                                        \
                const real *a = acc + (r - r0) * plane * cout;                                      \
                real *o = out + r * cout * plane;                                                   \
                for (int64_t co = c0; co < c1; co++)                                                \
                    for (int64_t p = 0; p < plane; p++) o[co * plane + p] = a[p * cout + co];       \
            }                                                                                       \
        }                                                                                           \
        free(acc);                                                                                  \
        free(events);                                                                               \
    }                                                                                               \
    free(taps);                                                                                     \
    return failed;                                                                                  \
}                                                                                                   \
/* spike bookkeeping of spikes [steps, batch, channels, positions]: totals[b] and channel[c] gain  */ \
/* their spikes, ops[b] their spikes times each neuron's fan-out fan[c, p]. Counts are whole       */ \
/* numbers, summed exactly in double: the result does not depend on the order or the threads       */ \
int tally_##suffix(const real *restrict spikes, int64_t steps, int64_t batch, int64_t channels,    \
                   int64_t positions, const real *restrict fan, real *restrict totals,              \
                   real *restrict channel, real *restrict ops, int64_t threads) {                   \
    const int64_t n = channels * positions;                                                         \
    double *per_channel = calloc(batch * channels, sizeof(double));                                 \
    if (!per_channel) return 1;                                                                     \
    int failed = 0;                                                                                 \
    _Pragma("omp parallel num_threads(threads) reduction(|:failed)")                                \
    {                                                                                               \
        real *count = malloc(sizeof(real) * n);                                                     \
        failed = !count;                                                                            \
        _Pragma("omp for schedule(static)")                                                         \
        for (int64_t b = 0; b < batch; b++) {                                                       \
            if (failed) continue;                                                                   \
            for (int64_t i = 0; i < n; i++) count[i] = (real)0;                                     \
            for (int64_t t = 0; t < steps; t++) {                                                   \
                const real *s = spikes + (t * batch + b) * n;                                       \
                for (int64_t i = 0; i < n; i++) count[i] += s[i];                                   \
            }                                                                                       \
            double total = 0, synaptic = 0;                                                         \
            for (int64_t c = 0; c < channels; c++) {                                                \
                double in_channel = 0;                                                              \
                for (int64_t p = c * positions; p < (c + 1) * positions; p++) {                     \
                    in_channel += count[p];                                                         \
                    synaptic += (double)count[p] * fan[p];                                          \
                }                                                                                   \
                per_channel[b * channels + c] = in_channel;                                         \
                total += in_channel;                                                                \
            }                                                                                       \
            totals[b] += (real)total;                                                               \
            ops[b] += (real)synaptic;                                                               \
        }                                                                                           \
        free(count);                                                                                \
    }                                                                                               \
    for (int64_t c = 0; c < channels && !failed; c++) {                                             \
        double sum = 0;                                                                             \
        for (int64_t b = 0; b < batch; b++) sum += per_channel[b * channels + c];                   \
        channel[c] += (real)sum;                                                                    \
    }                                                                                               \
    free(per_channel);                                                                              \
    return failed;                                                                                  \
}
LOOPS(float, f32)
LOOPS(double, f64)
"""
# no contraction into fused multiply-adds (exact IEEE order); no FP traps lets gcc vectorise the compares
FLAGS = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math"]
# this CPU's vector units (AVX-512 / AVX2 / NEON) and OpenMP threads, tried first and dropped where the
# compiler refuses them. -march=native makes the library specific to this CPU: its cache key holds the
# CPU's identity (a home directory shared by a cluster's nodes gets one library per kind of CPU).
# Linked by soname, OpenMP is torch's own libgomp once torch is loaded: one thread pool, no contention
FAST = ["-march=native", "-mprefer-vector-width=512", "-fopenmp"]
SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
SIGNATURES = {"if_scan": [_P, _I, _P, _P, _I, _I, _D, _I], "fire": [_P, _D, _P, _P, _I, _I, _I], "integrate": [_P, _P, _I, _I, _I],
              "events": [_P, _I, _P, _I, _I, _I, _I, _P, _P, _I, _I, _I, _I, _I, _I, _I, _I, _I, _P, _I, _I],
              "tally": [_P, _I, _I, _I, _I, _P, _P, _P, _P, _I]}
_ONE = torch.ones(1, dtype=torch.float64)  # the plane scale of a plain (one-plane) event-driven pass
PARALLEL_MIN = 1 << 16  # neuron-steps below which a loop runs on one thread (waking others costs more)


def cache_dir() -> Path:
    """Where the compiled library is kept: $DQN2SNN_CACHE, else ~/.cache/dqn2snn_plugin."""
    return Path(os.environ.get("DQN2SNN_CACHE") or Path.home() / ".cache" / "dqn2snn_plugin")


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


def build(directory: Path) -> Path:
    """Compile SOURCE into `directory` (atomically: concurrent processes may race) and return the path."""
    cc = compiler()
    if cc is None:
        raise OSError("no C compiler found (set $CC, or install gcc or clang)")
    key = hashlib.sha256("\0".join([SOURCE, cc, *FLAGS, *FAST, cpu_identity()]).encode()).hexdigest()[:16]
    target = directory / f"fused_scan-{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        source, built = Path(tmp) / "fused_scan.c", Path(tmp) / "fused_scan.so"
        source.write_text(SOURCE)
        for flags in (FLAGS + FAST, FLAGS):
            done = subprocess.run([cc, *flags, str(source), "-o", str(built), "-lm"], capture_output=True, text=True)
            if done.returncode == 0:
                break
        else:
            raise OSError(f"{cc} failed: {done.stderr.strip()[-500:]}")  # the plain flags failed too
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
                function.argtypes, function.restype = argtypes, ctypes.c_int if name in ("events", "tally") else None
        return lib
    except OSError as error:
        warnings.warn(f"dqn2snn_plugin: compiled C loops unavailable ({error}); simulating with Python loops "
                      "and dense synapses instead (same spikes, slower). DQN2SNN_FUSED_SCAN=0 silences this.",
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
    if _switched_off or dtype not in SUFFIX or not all(t.is_cpu and t.dtype == dtype for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return library()


def threads(work: int) -> int:
    """Threads for a loop of `work` neuron-steps: torch's intra-op threads, one for small loops."""
    return torch.get_num_threads() if work >= PARALLEL_MIN else 1


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
                                                 steps, v.numel(), float(threshold), threads(spikes.numel()))
    return spikes, v


def fire(v: torch.Tensor, bits: int, start: float = 0.0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`binary_coding.fire` in one call: spikes [bits, ...] and the residual, or None where not usable."""
    lib = _usable(v)
    if lib is None:
        return None
    gate = v.contiguous()
    residual, spikes = torch.empty_like(gate), torch.empty((bits, *v.shape), dtype=v.dtype)
    getattr(lib, f"fire_{SUFFIX[v.dtype]}")(gate.data_ptr(), float(start), residual.data_ptr(), spikes.data_ptr(),
                                              bits, v.numel(), threads(spikes.numel()))
    return spikes, residual


def integrate(current: torch.Tensor) -> torch.Tensor | None:
    """`binary_coding.integrate` in one call: sum_t 2**(T-1-t) current[t] by doubling, or None."""
    lib = _usable(current)
    if lib is None or current.ndim < 1:
        return None
    current = current.contiguous()
    v = torch.empty(current.shape[1:], dtype=current.dtype)
    getattr(lib, f"integrate_{SUFFIX[v.dtype]}")(current.data_ptr(), v.data_ptr(), current.shape[0], v.numel(),
                                                   threads(current.numel()))
    return v


def events(x: torch.Tensor, layer: nn.Conv2d | nn.Linear, weight_t: torch.Tensor, *,
           scales: torch.Tensor | None = None, max_fraction: float = 1.0) -> torch.Tensor | None:
    """`layer(x)` summed event by event: each nonzero input adds its weight column (times its value) to
    its targets, inputs in index order, after the bias. None where not usable (then run the layer),
    or where more than `max_fraction` of the inputs are nonzero (a dense pass is faster there).

    `x` is the layer's input [rows, C, H, W] or [rows, features]; `weight_t` the weight with its input
    dimensions first and its output last ([C_in, kh, kw, C_out], or [in, out]: each tap's targets
    contiguous). With `scales` [P], `x` holds P planes [P, rows, ...] and the result is
    sum_q scales[q] * layer(x[q]) (binary coding's weighted spikes: every spike is still one event).
    The sums run in another order than a dense pass: results differ from it by rounding.
    Rows are shared among torch's intra-op threads.
    """
    lib = _usable(x, weight_t)
    if lib is None or (layer.bias is not None and layer.bias.dtype != x.dtype):
        return None
    planes = 1 if scales is None else len(scales)
    if scales is not None:
        if x.shape[0] != planes:
            return None
        x = x.flatten(0, 1)
    rows = x.shape[0] // planes
    if isinstance(layer, nn.Conv2d):
        if (x.ndim != 4 or layer.groups != 1 or layer.dilation != (1, 1) or layer.padding_mode != "zeros"
                or isinstance(layer.padding, str)):
            return None
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        hin, win = x.shape[2:]
        hout, wout = (hin + 2 * ph - kh) // sh + 1, (win + 2 * pw - kw) // sw + 1
        geometry = (x.shape[1], hin, win, layer.out_channels, kh, kw, sh, sw, ph, pw, hout, wout)
        out = torch.empty((rows, layer.out_channels, hout, wout), dtype=x.dtype)
    elif x.ndim == 2:
        geometry = (x.shape[1], 1, 1, layer.out_features, 1, 1, 1, 1, 0, 0, 1, 1)
        out = torch.empty((rows, layer.out_features), dtype=x.dtype)
    else:
        return None
    x = x.contiguous()
    scales = _ONE if scales is None else scales.to(torch.float64).contiguous()
    bias = None if layer.bias is None else layer.bias.detach().contiguous()
    done = getattr(lib, f"events_{SUFFIX[x.dtype]}")(
        x.data_ptr(), planes, scales.data_ptr(), rows, *geometry[:3], weight_t.data_ptr(),
        None if bias is None else bias.data_ptr(), *geometry[3:], out.data_ptr(), int(max_fraction * x.numel()),
        torch.get_num_threads())  # each input costs its fan-out: worth the threads at any size
    if done == 1:
        raise MemoryError(f"no memory for the event-driven pass of {layer}")
    return out if done == 0 else None


def tally(spikes: torch.Tensor, fan: torch.Tensor, totals: torch.Tensor, channels: torch.Tensor,
          ops: torch.Tensor) -> bool:
    """Spike bookkeeping in one call, in place: totals [B] and channels [C] gain the spikes of
    `spikes` [T, B, C, ...], ops [B] their spikes times `fan` [C, ...] (synapses per neuron).
    False where not usable (then the caller counts with tensor operations)."""
    lib = _usable(spikes, fan, totals, channels, ops)
    if lib is None or spikes.ndim < 3 or fan.shape != spikes.shape[2:] or channels.shape != spikes.shape[2:3]:
        return False
    if not (totals.is_contiguous() and channels.is_contiguous() and ops.is_contiguous()):
        return False
    steps, batch, n_channels = spikes.shape[:3]
    spikes, fan = spikes.contiguous(), fan.contiguous()
    if getattr(lib, f"tally_{SUFFIX[spikes.dtype]}")(spikes.data_ptr(), steps, batch, n_channels,
                                                     fan.numel() // n_channels, fan.data_ptr(), totals.data_ptr(),
                                                     channels.data_ptr(), ops.data_ptr(),
                                                     min(batch, threads(spikes.numel()))):
        raise MemoryError("no memory for the spike bookkeeping")
    return True
