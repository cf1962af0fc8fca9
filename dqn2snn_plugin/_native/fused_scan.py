"""Compiled inference loops in C: the IF scan, binary coding's fire / integrate, event-driven synapses
and spike bookkeeping, one call each.

In Python every time step of a neuron layer costs a few tensor dispatches (add, compare, subtract)
of some microseconds each; with one observation per decision (an agent acting) that overhead, not
the arithmetic, sets the speed. The neuron loops do the same floating-point operations in the same
order as the Python references (`engine.rate.if_scan`, `binary_coding.fire` / `integrate`; no fused
multiply-add, no fast-math), so spikes and membranes are bit-identical (tests check it), and the
neurons are walked in cache-sized blocks with time inside.

`events` is what makes the simulation event-driven: a synaptic layer reads its input spikes and,
for each one, adds that neuron's weight column to its targets, so its cost follows the spike count
(2-20 % of the neurons fire per step) instead of the layer's size. It sums in another order than a
dense pass, so its currents differ from one by rounding only (tests bound it; spikes are compared
in float64). `tally` counts spikes per layer, channel and synapse in one pass. `rate_layer` and
`binary_layer` run a whole spiking layer in one call (its neurons, its counts, and the event-driven
pass into the next layer), the same arithmetic as those steps in turn; a binary layer keeps each
neuron's spikes as the bits of one code. `delta_layer` is delta coding's requantisation and bookkeeping
of one layer (its changes, their fan-outs and bits, the neurons they reach) in one pass; `delta_input` the
observation's changes (checked, counted and sent) read straight from the observations. `fractional` is the observation check (no fractions, NaN or
infinities in image frames) in one pass.

The C source (`fused_scan.c`, next to this file) is compiled once per machine and CPU with the
system's C compiler into `$DQN2SNN_CACHE/native` and called through cffi with the prototypes of
`fused_scan.h`; `loader.py` says why that route, and how a cached library is verified before it is
loaded. It is built for this CPU's vector units and with OpenMP, which then shares torch's own thread
pool (`torch.set_num_threads` sets both). Where it cannot be built or loaded one RuntimeWarning says so
and the Python loops and dense passes run instead, with the same spikes (`DQN2SNN_NATIVE=require`:
an error instead). `DQN2SNN_FUSED_SCAN=0` turns the compiled loops off without a warning, and
`with fused_scan.switched_off():` does so for a block (to time or check against the Python loops; a
context variable, so it holds in this thread or task only). Only contiguous float32 / float64 CPU
tensors outside autograd take the compiled path.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from dqn2snn_plugin._native.loader import REAL as REAL_C
from dqn2snn_plugin._native.loader import build, compiler, cpu_identity, interface, library, source
from dqn2snn_plugin.io.cache import cache_dir

__all__ = ["MAX_PLANES", "binary_layer", "build", "cache_dir", "compiler", "cpu_identity", "delta_input", "delta_layer", "events", "fire",
           "fractional", "if_scan", "integrate", "library", "rate_layer", "source", "switched_off", "tally",
           "threads"]

SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
REAL = {torch.float32: "float *", torch.float64: "double *"}  # a tensor's data as the C functions take it
_ONE = torch.ones(1, dtype=torch.float64)  # the plane scale of a plain (one-plane) event-driven pass
MAX_PLANES = 32  # input planes of one event-driven pass (a neuron's spikes are the bits of a 32-bit code)
GEOMETRY = ("cin", "hin", "win", "cout", "kh", "kw", "sh", "sw", "ph", "pw", "hout", "wout")  # see _geometry
PARALLEL_MIN = 1 << 16  # neuron-steps below which a loop runs on one thread (waking others costs more)
_switched_off: ContextVar[bool] = ContextVar("dqn2snn_fused_scan_switched_off", default=False)


@contextlib.contextmanager
def switched_off() -> Iterator[None]:
    """Run the Python loops (the reference) inside this block, e.g. to compare speeds or results."""
    token = _switched_off.set(True)
    try:
        yield
    finally:
        _switched_off.reset(token)


def _usable(*tensors: torch.Tensor) -> Any:
    """The library, if all `tensors` are CPU float32/float64 of one dtype and no gradient is wanted."""
    if _switched_off.get():
        return None
    dtype, grad = tensors[0].dtype, torch.is_grad_enabled()
    if dtype not in SUFFIX:
        return None
    for t in tensors:
        if not t.is_cpu or t.dtype != dtype or grad and t.requires_grad:
            return None
    return library()


def _ptr(t: torch.Tensor | None) -> Any:
    """`t`'s data as the C code's typed pointer (float * or double *; NULL for None)."""
    ffi = interface()
    return ffi.NULL if t is None else ffi.cast(_pointer_type(t.dtype), t.data_ptr())


@functools.cache
def _pointer_type(dtype: torch.dtype) -> Any:
    """cffi's type of a `dtype` tensor's data pointer, looked up once (casting to it: half the cost of a name)."""
    return interface().typeof(REAL[dtype])


def threads(work: int) -> int:
    """Threads for a loop of `work` neuron-steps: torch's intra-op threads, one for small loops."""
    return torch.get_num_threads() if work >= PARALLEL_MIN else 1


def if_scan(current: torch.Tensor, v: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`engine.rate.if_scan` in one call: spikes [T, ...] and final membrane, or None where not usable."""
    lib = _usable(current, v)
    if lib is None or current.ndim < 1 or current.shape[1:] != v.shape:
        return None
    steps = current.shape[0]
    current, step_stride = _scan_input(current, v)
    v = v.contiguous().clone()
    spikes = torch.empty((steps, *v.shape), dtype=v.dtype)
    getattr(lib, f"if_scan_{SUFFIX[v.dtype]}")(_ptr(current), step_stride, _ptr(v), _ptr(spikes),
                                                 steps, v.numel(), float(threshold), threads(spikes.numel()))
    return spikes, v


def _scan_input(current: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`current` [T, ...] as the IF scan reads it, and its step stride: a constant current expanded
    over time (stride 0) is read once."""
    if current.shape[0] > 1 and current.stride(0) == 0:
        return current[0].contiguous(), 0
    return current.contiguous(), v.numel()


def fire(v: torch.Tensor, bits: int, start: float = 0.0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`binary_coding.fire` in one call: spikes [bits, ...] and the residual, or None where not usable."""
    lib = _usable(v)
    if lib is None:
        return None
    gate = v.contiguous()
    residual, spikes = torch.empty_like(gate), torch.empty((bits, *v.shape), dtype=v.dtype)
    getattr(lib, f"fire_{SUFFIX[v.dtype]}")(_ptr(gate), float(start), _ptr(residual), _ptr(spikes),
                                              bits, v.numel(), threads(spikes.numel()))
    return spikes, residual


def fractional(x: torch.Tensor) -> bool | None:
    """Whether any value of `x` is not a whole number (a fraction, NaN or an infinity), in one pass
    without a temporary; None where not usable."""
    lib = _usable(x)
    if lib is None:
        return None
    x = x.contiguous()
    return bool(getattr(lib, f"fractional_{SUFFIX[x.dtype]}")(_ptr(x), x.numel(), threads(x.numel())))


def integrate(current: torch.Tensor) -> torch.Tensor | None:
    """`binary_coding.integrate` in one call: sum_t 2**(T-1-t) current[t] by doubling, or None."""
    lib = _usable(current)
    if lib is None or current.ndim < 1:
        return None
    current = current.contiguous()
    v = torch.empty(current.shape[1:], dtype=current.dtype)
    getattr(lib, f"integrate_{SUFFIX[v.dtype]}")(_ptr(current), _ptr(v), current.shape[0], v.numel(),
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
    lib = _usable(x)
    planes = 1 if scales is None else len(scales)
    if lib is None or scales is not None and (x.shape[0] != planes or planes > MAX_PLANES):
        return None
    x = x.contiguous()
    rows, row = (x.shape[1], x.shape[2:]) if scales is not None else (x.shape[0], x.shape[1:])
    synapses, out = _synapses(rows, row, x.dtype, layer, weight_t)
    if out is None:
        return None
    plane_scales = _plane_scales(scales)  # held here: the C call reads it
    done = getattr(lib, f"events_{SUFFIX[x.dtype]}")(
        _ptr(x), planes, _ptr(plane_scales), rows, synapses, _ptr(out),
        int(max_fraction * x.numel()), torch.get_num_threads())  # each input costs its fan-out: worth the threads
    if done == 1:
        raise MemoryError(f"no memory for the event-driven pass of {layer}")
    return out if done == 0 else None


def _plane_scales(scales: torch.Tensor | None) -> torch.Tensor:
    """The plane weights as the C code reads them (float64, contiguous); one plane of weight 1 for None."""
    return _ONE if scales is None else scales.to(torch.float64).contiguous()


def _synapses(rows: int, row: torch.Size, dtype: torch.dtype, layer: nn.Module | None,
              weight_t: torch.Tensor | None) -> tuple[Any, torch.Tensor | None]:
    """What the C code needs to send spikes through `layer` event by event, for `rows` inputs of shape
    `row` (a Linear reads them flat) and `dtype`: its `struct synapses` (fused_scan.h), and the empty output
    [rows, ...]; NULL and None where `layer` cannot be read so (then a dense pass)."""
    geometry = None
    if (layer is not None and weight_t is not None and weight_t.dtype == dtype and _usable(weight_t) is not None
            and weight_t.is_contiguous() and (layer.bias is None or layer.bias.dtype == dtype and layer.bias.is_contiguous())):
        geometry = _geometry(layer, (math.prod(row),) if isinstance(layer, nn.Linear) else tuple(row))
    if geometry is None:
        return interface().NULL, None
    sizes, out_row = geometry
    bias = 0 if layer.bias is None else layer.bias.data_ptr()  # the layer's own storage: alive through the call
    return _struct(SUFFIX[dtype], weight_t.data_ptr(), bias, sizes), torch.empty((rows, *out_row), dtype=dtype)


@functools.lru_cache(maxsize=256)
def _struct(suffix: str, weight: int, bias: int, sizes: tuple[int, ...]) -> Any:
    """A `struct synapses` of these addresses (bias 0: none) and sizes: made once per layer and shape (its
    content is its key, so a cached one always holds what a new one would; a fifth of a call's cost)."""
    ffi = interface()
    return ffi.new(f"struct synapses_{suffix} *", {"weight": ffi.cast(f"{REAL_C[suffix]} *", weight),
                                                   "bias": ffi.cast(f"{REAL_C[suffix]} *", bias),
                                                   **dict(zip(GEOMETRY, sizes))})


def _counters_fit(neurons: torch.Size, fan: torch.Tensor, totals: torch.Tensor, channels: torch.Tensor,
                  ops: torch.Tensor) -> bool:
    """Whether `tally`'s counters fit a layer of `neurons` ([C, ...] per sample) and can be written in place."""
    return (len(neurons) >= 1 and fan.shape == neurons and channels.shape == neurons[:1]
            and totals.is_contiguous() and channels.is_contiguous() and ops.is_contiguous())


def _geometry(layer: nn.Module, row: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(cin, hin, win, cout, kh, kw, sh, sw, ph, pw, hout, wout) of `layer` on one input of shape `row`, and
    the shape of one output; None for a layer the event-driven pass cannot read."""
    if isinstance(layer, nn.Conv2d):
        if (len(row) != 3 or layer.groups != 1 or layer.dilation != (1, 1) or layer.padding_mode != "zeros"
                or isinstance(layer.padding, str)):
            return None
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        cin, hin, win = row
        hout, wout = (hin + 2 * ph - kh) // sh + 1, (win + 2 * pw - kw) // sw + 1
        return (cin, hin, win, layer.out_channels, kh, kw, sh, sw, ph, pw, hout, wout), (layer.out_channels, hout, wout)
    if isinstance(layer, nn.Linear) and len(row) == 1:
        return (row[0], 1, 1, layer.out_features, 1, 1, 1, 1, 0, 0, 1, 1), (layer.out_features,)
    return None


def binary_layer(gate: torch.Tensor, bits: int, start: float, fan: torch.Tensor, totals: torch.Tensor,
                 channels: torch.Tensor, ops: torch.Tensor, layer: nn.Module | None = None,
                 weight_t: torch.Tensor | None = None, scales: torch.Tensor | None = None,
                 max_fraction: float = 1.0, keep_spikes: bool = False
                 ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None] | None:
    """One binary-coded layer in one C call: `fire(gate, bits, start)`, `tally` of its spikes into
    totals / channels / ops, and, with `layer`, its weighted planes sent by `events`.

    Returns (spikes [bits, B, ...], residual, next membrane [B, ...] or None where the next layer
    needs a dense pass: no `layer`, or too many spikes), the same as those three calls made in turn;
    None where not usable. The spikes are None where the next membrane is there and `keep_spikes`
    is False: the spikes then live only as each neuron's bits, which the event-driven pass reads.
    Saves the Python work and memory traffic between the steps: at one observation per call that,
    not the arithmetic, is most of a layer's time.
    """
    lib = _usable(gate, fan, totals, channels, ops)
    if lib is None or bits > MAX_PLANES or not _counters_fit(gate.shape[1:], fan, totals, channels, ops):
        return None
    gate, fan = gate.contiguous(), fan.contiguous()
    batch, n_channels = gate.shape[:2]
    spikes, residual = torch.empty((bits, *gate.shape), dtype=gate.dtype), torch.empty_like(gate)
    synapses, out = _synapses(batch, gate.shape[1:], gate.dtype, layer, weight_t)
    plane_scales = _plane_scales(scales)  # held here: the C call reads it
    done = getattr(lib, f"binary_layer_{SUFFIX[gate.dtype]}")(
        _ptr(gate), float(start), bits, batch, n_channels, fan.numel() // n_channels, _ptr(residual),
        _ptr(spikes), int(keep_spikes), _ptr(fan), _ptr(totals), _ptr(channels), _ptr(ops),
        _ptr(plane_scales), synapses, _ptr(out),
        int(max_fraction * spikes.numel()), threads(spikes.numel()), torch.get_num_threads())
    if done == 1:
        raise MemoryError("no memory for a binary-coded layer")
    if done == 0:
        return spikes if keep_spikes else None, residual, out
    return spikes, residual, None


def rate_layer(current: torch.Tensor, v: torch.Tensor, threshold: float, fan: torch.Tensor, totals: torch.Tensor,
               channels: torch.Tensor, ops: torch.Tensor, layer: nn.Module | None = None,
               weight_t: torch.Tensor | None = None, max_fraction: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """One rate-coded layer in one C call: `if_scan(current, v, threshold)`, `tally` of its spikes into
    totals / channels / ops, and, with `layer`, `events` on its T*B spike maps.

    Returns (spikes [T, B, ...], final membrane, next current [T*B, ...] or None where the next layer
    needs a dense pass: no `layer`, or too many spikes), the same as those three calls made in turn;
    None where not usable. Saves the Python work between them (most of a layer's time at B = 1).
    """
    lib = _usable(current, v, fan, totals, channels, ops)
    if (lib is None or current.ndim < 2 or current.shape[1:] != v.shape
            or not _counters_fit(v.shape[1:], fan, totals, channels, ops)):
        return None
    steps, (batch, n_channels) = current.shape[0], v.shape[:2]
    current, step_stride = _scan_input(current, v)
    v, fan = v.clone(memory_format=torch.contiguous_format), fan.contiguous()
    spikes = torch.empty((steps, *v.shape), dtype=v.dtype)
    synapses, out = _synapses(steps * batch, v.shape[1:], v.dtype, layer, weight_t)
    loop = threads(spikes.numel())
    done = getattr(lib, f"rate_layer_{SUFFIX[v.dtype]}")(
        _ptr(current), step_stride, _ptr(v), _ptr(spikes), steps, float(threshold), batch, n_channels,
        fan.numel() // n_channels, _ptr(fan), _ptr(totals), _ptr(channels), _ptr(ops), synapses,
        _ptr(out), int(max_fraction * spikes.numel()), loop, min(batch, loop),
        torch.get_num_threads())
    if done == 1:
        raise MemoryError("no memory for a rate-coded layer")
    return spikes, v, out if done == 0 else None


def tally(spikes: torch.Tensor, fan: torch.Tensor, totals: torch.Tensor, channels: torch.Tensor,
          ops: torch.Tensor) -> bool:
    """Spike bookkeeping in one call, in place: totals [B] and channels [C] gain the spikes of
    `spikes` [T, B, C, ...], ops [B] their spikes times `fan` [C, ...] (synapses per neuron).
    False where not usable (then the caller counts with tensor operations)."""
    lib = _usable(spikes, fan, totals, channels, ops)
    if lib is None or not _counters_fit(spikes.shape[2:], fan, totals, channels, ops):
        return False
    steps, batch, n_channels = spikes.shape[:3]
    spikes, fan = spikes.contiguous(), fan.contiguous()
    if getattr(lib, f"tally_{SUFFIX[spikes.dtype]}")(_ptr(spikes), steps, batch, n_channels,
                                                     fan.numel() // n_channels, _ptr(fan), _ptr(totals),
                                                     _ptr(channels), _ptr(ops),
                                                     min(batch, threads(spikes.numel()))):
        raise MemoryError("no memory for the spike bookkeeping")
    return True


def delta_layer(v: torch.Tensor | None, start: float, levels: float, level: torch.Tensor | None,
                change: torch.Tensor, fan: torch.Tensor, totals: torch.Tensor, channels: torch.Tensor | None,
                ops: torch.Tensor, bits: torch.Tensor | None, following: nn.Module, touched: torch.Tensor,
                weight_t: torch.Tensor | None = None, next_v: torch.Tensor | None = None,
                max_fraction: float = 1.0, whole: tuple[torch.Tensor, float] | None = None) -> bool | None:
    """Delta coding's one layer [B, C, ...] in one call, in place (`engine.delta`): with `v`, `level` becomes
    clip(floor(v + start), 0, levels) and `change` the new level less the old; without, `change` (the
    observation's) is given. totals / ops / bits / touched [B] and channels [C] gain the changes, their
    fan-outs, the ones of |change| and the neurons of `following` (the next stage's Conv2d / Linear) they
    reach. With `next_v` (the next stage's membranes) and `weight_t` (`events`' layout), where at most
    `max_fraction` of the inputs changed, each change then adds its weight column times its value to
    `next_v` (no bias); a fully connected `following` with `whole` (its weights as int32 [in, out], whole numbers
    of the float64 unit) reads those instead: each change times the unit, times the whole number, the same
    product (exact) from half the memory. Returns True when all of it is done, False where the changes were too many to send
    (`next_v` untouched: run a dense pass), None where not usable (then the caller uses tensor operations)."""
    lib = _usable(change, fan, totals, ops, touched,
                  *(t for t in (v, level, channels, bits, weight_t, next_v) if t is not None))
    row = tuple(change.shape[1:])
    tensors = [t for t in (v, level, change, fan, totals, channels, ops, bits, touched, weight_t, next_v) if t is not None]
    if lib is None or len(row) < 1 or not all(t.is_contiguous() for t in tensors) or fan.shape != row:
        return None
    geometry = _geometry(following, (math.prod(row),) if isinstance(following, nn.Linear) else row)
    if geometry is None or next_v is not None and (weight_t is None or tuple(next_v.shape[1:]) != geometry[1]
                                                   or weight_t.numel() != following.weight.numel()):
        return None
    suffix, ffi = SUFFIX[change.dtype], interface()
    integers = whole is not None and change.dtype == torch.float64 and isinstance(following, nn.Linear) and (
        whole[0].dtype == torch.int32 and whole[0].is_contiguous() and whole[0].shape == (geometry[0][0], geometry[0][3]))
    done = getattr(lib, f"delta_layer_{suffix}")(
        _ptr(v), float(start), float(levels), _ptr(level), _ptr(change), change.shape[0], row[0],
        math.prod(row[1:]), _ptr(fan), _ptr(totals), _ptr(channels), _ptr(ops), _ptr(bits),
        _struct(suffix, 0 if weight_t is None else weight_t.data_ptr(), 0, geometry[0]),
        ffi.cast("int32_t *", whole[0].data_ptr()) if integers else ffi.NULL, float(whole[1]) if integers else 0.0,
        _ptr(touched), _ptr(next_v), int(max_fraction * change.numel()))
    if done == 1:
        raise MemoryError("no memory for a delta-coded layer")
    return done == 0


def delta_input(x: torch.Tensor, previous: torch.Tensor, x_max: float, fan: torch.Tensor, totals: torch.Tensor,
                ops: torch.Tensor, following: nn.Module, weight_t: torch.Tensor, touched: torch.Tensor,
                next_v: torch.Tensor, max_fraction: float = 1.0) -> bool | None:
    """Delta coding's observation layer in one call, in place (`engine.delta`): where observations `x` [B, C, H, W]
    are whole numbers of magnitude at most `x_max` and at most `max_fraction` of them differ from `previous`,
    totals / ops / touched [B] gain the changes, their fan-outs `fan` [C, H, W] and the neurons of `following`
    (a Conv2d) they reach, each change x - previous adds its weight column (`weight_t`, `events`' layout, float64)
    times it to `next_v` (the float64 membranes after `following`), and `previous` becomes `x`: True. The same
    as `delta_layer` on the float64 change, without making it. False where not so (nothing written: then that
    route), None where not usable."""
    lib = _usable(x, previous)
    doubles = (fan, totals, ops, weight_t, touched, next_v)
    if (lib is None or _usable(*doubles) is None or fan.dtype != torch.float64 or not isinstance(following, nn.Conv2d)
            or x.shape != previous.shape or tuple(x.shape[1:]) != tuple(fan.shape)
            or not all(t.is_contiguous() for t in (x, previous, *doubles))):
        return None
    geometry = _geometry(following, tuple(x.shape[1:]))
    if geometry is None or tuple(next_v.shape[1:]) != geometry[1] or weight_t.numel() != following.weight.numel():
        return None
    suffix = SUFFIX[x.dtype]
    done = getattr(lib, f"delta_input_{suffix}")(
        _ptr(x), _ptr(previous), float(x_max), x.shape[0], x.shape[1], math.prod(x.shape[2:]), _ptr(fan),
        _ptr(totals), _ptr(ops), _struct(suffix, 0, 0, geometry[0]), _ptr(weight_t), _ptr(touched), _ptr(next_v),
        int(max_fraction * x.numel()))
    if done == 1:
        raise MemoryError("no memory for a delta-coded observation")
    return done == 0
