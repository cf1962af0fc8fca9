"""Simulation speed of the converted Nature-CNN (issues 5, 16): decisions per second vs the dense bound.

For each coding (rate: T in --T; binary: T in --binary-T) and batch B in {1, 8, 64}, on real Atari
states of a fixture DQN:
  (a) our multi-step simulation, `snn.readouts(obs, T)`, for each backend (spikingjelly, snntorch):
      compiled C loops and event-driven synapses (`dqn2snn_plugin._native.fused_scan`); with --python-loops
      also "dense synapses" (C loops, `snn.options.event_driven = False`) and "python loops" (no C at all);
  (b) a naive per-time-step loop over the whole network: `snn.as_sequential()` (the folded layers with
      SpikingJelly's IF neurons) in single-step mode, `functional.reset_net` per decision, the full forward (first conv
      included) on [B] inputs at every step, output current summed over T;
  (c) the dense bound: the DQN's throughput at batch B*T divided by T (evaluated in chunks of at most
      --dense-chunk samples: per-sample throughput no longer grows at that size).
The figure of merit is (a)/(c): the median over repeats of the ratio of the two times, measured
interleaved (a, c, a, c, ...) so that both see the same load. `--clock cpu` times process CPU time
instead of wall time: with --threads 1 that is robust to other processes on a shared machine.
Also: the fused loops' compile latency, peak memory per decision, firing rates per layer, and agent
steps per second of `evaluate` (its DQN and SNN games, 8 envs; rate T = 64, binary T = 8).
`--profile` adds the time breakdown of one simulation and the event-driven vs dense crossover per layer.

Delta coding (`--delta-T`, issue 26; its own table): each of B streams of consecutive game states of one
game (the DQN's own play, one env, cut into B consecutive stretches) is decided by the delta-coded SNN
carrying state per stream (`readouts(x, rows=...)`), against the DQN's own dense decision on the same B
states, both timed over windows of --delta-window decisions, interleaved, the windows moving on through the
sequence. Also the events per decision: changed inputs, graded events per layer, what binary spikes would
take (popcount of each change), synaptic operations and their share of the dense pass's MACs.

    python benchmarks/simulation_speed.py --out runs/simulation_speed
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from dqn2snn_plugin import convert
from dqn2snn_plugin._native import fused_scan
from dqn2snn_plugin import load_dqn
from dqn2snn_plugin.engine import events
from dqn2snn_plugin.calibration import collect_observations
from dqn2snn_plugin.experiments.evaluation import play_dqn, play_snn
from dqn2snn_plugin.experiments.settings import RunSettings
from dqn2snn_plugin.io.results import write_text

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "atari-dqn" / "BreakoutNoFrameskip-v4.qnet.pt"
NAIVE_LIMIT_S = 60.0  # skip a naive-loop cell whose single call is predicted to take longer than this
HEAVY_S = 2.0  # a cell whose warm-up call took longer than this gets fewer repeats


# ----------------------------------------------------------------------------------------- timing
def make_sync(device: str):
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]  # set from --clock


def timed(fn, sync) -> float:
    sync()
    start = clock()
    fn()
    sync()
    return clock() - start


def measure(fn, sync, repeats: int) -> dict:
    """Warm up once (timed, to size the repeats), then the median of up to `repeats` timed calls."""
    warm = timed(fn, sync)
    n = repeats if warm < HEAVY_S else max(1, min(repeats, 2 if warm < 5 * HEAVY_S else 1))
    times = [timed(fn, sync) for _ in range(n)]
    return {"median_s": statistics.median(times), "times_s": times, "warmup_s": warm}


def measure_interleaved(fns: dict, sync, repeats: int, reference: str) -> dict:
    """`measure` for several calls at once, timed in turn (a, b, a, b, ...) so they share the load.

    Each result also holds `ratio`: the median over rounds of reference time / its time."""
    warm = {name: timed(fn, sync) for name, fn in fns.items()}
    slowest = max(warm.values())
    n = repeats if slowest < HEAVY_S else max(1, min(repeats, 2 if slowest < 5 * HEAVY_S else 1))
    times = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            times[name].append(timed(fn, sync))
    return {name: {"median_s": statistics.median(times[name]), "times_s": times[name], "warmup_s": warm[name],
                   "ratio": statistics.median(r / t for r, t in zip(times[reference], times[name]))}
            for name in fns}


def compile_latency() -> dict:
    """Seconds to build the fused C loops from scratch (a fresh cache), and whether they load here."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        try:
            fused_scan.build(Path(tmp))
            seconds = time.perf_counter() - start
        except OSError as error:
            return {"available": False, "error": str(error)}
    return {"available": fused_scan.library() is not None, "compile_s": seconds, "compiler": fused_scan.compiler()}


# ----------------------------------------------------------------------------------------- memory
_libc = ctypes.CDLL("libc.so.6") if platform.system() == "Linux" else None
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_memory(fn, device: str) -> tuple[int, str]:
    """Peak extra memory of one call, in bytes, and how it was measured.

    cuda: `torch.cuda.max_memory_allocated` above the allocation before the call.
    cpu: resident set size sampled every 0.2 ms by a thread, peak minus the RSS just before the call,
    after `malloc_trim(0)` so that memory freed by earlier calls is handed back first (without it the
    allocator reuses cached pages and the delta reads ~0). Allocations that live < ~1 ms can be missed.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, "cuda max_memory_allocated delta"
    if _libc is not None:
        _libc.malloc_trim(0)
    base = _rss()
    peak = [base]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        peak[0] = max(peak[0], _rss())
        done.set()
        thread.join()
    return peak[0] - base, "RSS peak delta (/proc/self/statm sampled at 0.2 ms, after malloc_trim)"


# ----------------------------------------------------------------------------------------- methods
def naive_model(snn):
    """The SNN as a SpikingJelly graph in single-step mode: what a SpikingJelly user runs step by step."""
    from spikingjelly.activation_based import functional

    net = copy.deepcopy(snn.as_sequential())
    functional.set_step_mode(net, "s")
    return net.eval()


@torch.no_grad()
def naive_decide(net, x: torch.Tensor, T: int) -> torch.Tensor:
    """Per-time-step loop over the whole network (first conv included); mean output current over T."""
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    out = net(x)
    for _ in range(T - 1):
        out = out + net(x)
    return out / T


def dense_call(q_network, states: torch.Tensor, n: int, chunk: int):
    """The DQN on min(n, chunk) real states (cycled), and n / that: the factor that turns its time
    into the time for n states (per-sample throughput no longer grows beyond `chunk`)."""
    size = min(n, chunk)
    x = states[torch.arange(size) % states.shape[0]]
    return (lambda: q_network(x)), n / size


# ----------------------------------------------------------------------------------------- play
def evaluate_speed(ckpt, snn, T: int, settings: RunSettings) -> dict:
    """Agent steps per second of `evaluate` with this SNN: its DQN games (the SNN simulated on every
    DQN state for agreement), then its SNN games; the same calls `evaluate` makes. Timed with --clock
    (with `cpu`, "wall_s" holds CPU seconds: ALE runs in this process)."""
    parts = {}
    for name, games in (("dqn_games", lambda: play_dqn(ckpt, settings, snn, T)[0].to_json()),
                        ("snn_games", lambda: play_snn(ckpt, snn, T, settings).score.to_json())):
        start = clock()
        score = games()
        parts[name] = {"wall_s": clock() - start, "agent_steps": sum(score["lengths"])}
    steps, wall = (sum(p[k] for p in parts.values()) for k in ("agent_steps", "wall_s"))
    return {"coding": snn.coding, "T": T, "n_envs": settings.n_envs, "episodes": settings.episodes,
            "max_steps": settings.max_steps, **parts, "agent_steps": steps, "wall_s": wall,
            "agent_steps_per_s": steps / wall,
            "snn_games_agent_steps_per_s": parts["snn_games"]["agent_steps"] / parts["snn_games"]["wall_s"]}


# ----------------------------------------------------------------------------------------- profile
def layer_name(synapse) -> str:
    names = {torch.nn.Conv2d: "conv", torch.nn.Linear: "fc"}
    layers = [m for m in synapse if type(m) in names]
    return f"{names[type(layers[-1])]}:{'x'.join(str(d) for d in layers[-1].weight.shape[:2])}"


@torch.no_grad()
def breakdown(snn, x: torch.Tensor, T: int, sync) -> dict:
    """`engine.rate.RateSchedule.simulate` step by step (fresh membranes, one time block), a timer per part.

    Calls the library's own parts (dqn2snn_plugin/engine: backend.run, count, synapses.current, the
    steps that `fused_scan.rate_layer` runs as one C call per layer) so that they add up to one call;
    the result is checked against `snn.readouts`.
    """
    parts: dict[str, float] = {}

    def tick(name, fn):
        sync()
        start = time.perf_counter()
        value = fn()
        sync()
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - start
        return value

    total_start = time.perf_counter()
    x = tick("prepare", lambda: snn._prepare(x))
    current = tick("synapse conv1 (once)", lambda: first_current(snn, x, T))
    counts = snn.engine.counter.new(x.shape[0], x)
    for index, (neuron, synapse) in enumerate(zip(snn.neurons, snn.synapses[1:])):
        v0 = tick("bookkeeping: v0/alloc", lambda: torch.full_like(current[0], snn.initial_membrane))
        spikes, v = tick(f"IF scan after {layer_name(snn.synapses[index])}", lambda: snn.backend.run(neuron, current, v0))
        tick("bookkeeping: spike counts", lambda: snn.engine.counter.count(index, spikes, counts))
        current = tick(f"synapse {layer_name(synapse)}", lambda: snn.engine.synapses.current(synapse, spikes))
    v0 = torch.full_like(current[0], snn.initial_membrane)
    out_spikes, v_out = tick("IF scan output", lambda: snn.backend.run(snn.output_neuron, current / snn.scales.output, v0))
    count = tick("readout", lambda: out_spikes.sum(0))
    value = (count + v_out - v0) * snn.scales.output / T
    total = time.perf_counter() - total_start
    reference = snn.readouts(x, T)["spikes+membrane"]
    return {"parts_s": parts, "total_s": total, "matches_library": bool(torch.allclose(value, reference, atol=1e-5))}


def first_current(snn, x: torch.Tensor, T: int) -> torch.Tensor:
    """The first layer's input current [T, B, ...]: constant analog input, computed once."""
    first = snn.synapses[0](x)
    return first.expand(T, *first.shape)


@torch.no_grad()
def event_crossover(snn, x: torch.Tensor, T: int, rates: list[float], repeats: int, sync) -> dict:
    """Dense pass vs event-driven pass (`fused_scan.events`) of each wide synaptic layer: on its real
    input spikes from `x`, and on Bernoulli spikes of the same shape at each of `rates`. Rate coding:
    [T*B] spike maps to [T*B] currents; binary coding: T weighted planes to [B] integrated membranes
    (dense: T*B currents, then `binary_coding.integrate`). Where events stop winning sets
    `snn.options.sparse_rate`, `sparse_rows` and `sparse_rate_planes`."""
    binary = snn.coding == "binary"
    name, passes = "integrated" if binary else "current", snn.engine.synapses
    recorded, method = [], getattr(passes, name)
    setattr(passes, name, lambda synapse, spikes: recorded.append((synapse, spikes)) or method(synapse, spikes))
    # layers in separate steps (not fused into one C call), so that their spikes pass here
    snn.backend.binary_start = snn.backend.scan_threshold = lambda neuron, v: None
    try:
        snn.readouts(x, T)
    finally:
        delattr(passes, name)
        del snn.backend.binary_start, snn.backend.scan_threshold
    rows = []
    for synapse, spikes in recorded:
        layer = events.event_layer(synapse)
        if layer is None or spikes[0, 0].numel() < snn.options.sparse_min_inputs:
            continue
        weight, scales = passes.weight(layer), (events.bit_weights(T) if binary else None)
        for label, s in [("real", spikes)] + [(f"{r:g}", (torch.rand_like(spikes) < r).to(spikes.dtype)) for r in rates]:
            flat = s.flatten(0, 1)
            events_in = s if binary else flat  # planes [T, B, ...] or maps [T*B, ...]; a Linear reads them flat
            events_in = events_in.flatten(2 if binary else 1) if isinstance(layer, torch.nn.Linear) else events_in

            def dense(s=s, flat=flat):
                return events.integrated_densely(synapse, s) if binary else synapse(flat)

            rows.append({"layer": layer_name(synapse), "rate": label, "measured_rate": float(s.mean()),
                         "maps": s.shape[1] if binary else flat.shape[0],
                         "dense_ms": 1e3 * measure(dense, sync, max(repeats, 5))["median_s"],
                         "events_ms": 1e3 * measure(lambda: fused_scan.events(events_in, layer, weight, scales=scales),
                                                    sync, max(repeats, 5))["median_s"]})
    return {"coding": snn.coding, "T": T, "B": x.shape[0], "rows": rows}


# ----------------------------------------------------------------------------------------- output
def machine(device: str) -> dict:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": device, "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["SJ_IF_CUDA_IMPLEMENTATION"] = os.environ.get("SJ_IF_CUDA_IMPLEMENTATION", "")
    return info


def fmt_rate(value):
    return "skipped" if value is None else f"{value:,.1f}"


def fused_line(fused: dict) -> str:
    if not fused["available"]:
        return f"Compiled C loops: unavailable here ({fused.get('error', 'not loaded')}); (a) ran the Python loops."
    return f"Compiled C loops: built from scratch in {fused['compile_s']:.2f} s by {fused['compiler']} (once per machine)."


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Simulation speed ({report['checkpoint']}, {report['started_utc']})", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, device {m['device']}"
        + (f" ({m['gpu']}, SJ_IF_CUDA_IMPLEMENTATION={m['SJ_IF_CUDA_IMPLEMENTATION'] or 'default'})" if "gpu" in m else "")
        + f"; load average at start {m['load_average_start'][0]:.2f}, at end {report['load_average_end'][0]:.2f}.",
        "",
        f"Decisions per second (median of repeats, {report['clock']} clock; a decision = one state simulated "
        "for T steps). (a) = `snn.readouts(obs, T)`, event-driven synapses and C loops; dense synapses = (a) with "
        "`event_driven = False`; python loops = (a) without any C (dense synapses too); naive = "
        "`snn.as_sequential()` in SpikingJelly single-step mode; dense = DQN throughput at batch B*T / T. "
        "Figure of merit (a)/(c): median over interleaved repeats of the time ratio.", "",
        fused_line(report["fused_scan"]), "",
    ]
    backends = report["backends"]
    extra = [k for k in ("dense synapses", "python loops", "naive") if any(k in r for r in report["rows"])]
    head = ["coding", "T", "B"] + [f"(a) {b}" for b in backends] + extra + ["(c) dense"] + [f"(a)/(c) {b}" for b in backends]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        cells = [row["coding"], str(row["T"]), str(row["B"])] + [fmt_rate(row[b].get("decisions_per_s")) for b in backends]
        cells += [fmt_rate(row[k].get("decisions_per_s")) if k in row else "-" for k in extra]
        cells += [fmt_rate(row["dense"]["decisions_per_s"])] + [f"{row[b]['ratio']:.2f}" for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [f"T={r['T']},B={r['B']}: {r['naive']['skipped']}" for r in report["rows"] if "skipped" in r.get("naive", {})]
    if skipped:
        lines += ["", "Naive loop skipped: " + "; ".join(skipped)]
    if report.get("memory"):
        lines += ["", f"Peak memory per decision (MiB; {report['memory_method']}):", "",
                  "| coding T | B | " + " | ".join(report["memory_methods"]) + " |", "|" + "---|" * (2 + len(report["memory_methods"]))]
        for mem in report["memory"]:
            lines.append(f"| {mem['coding']} {mem['T']} | {mem['B']} | " + " | ".join(
                f"{mem[k] / mem['B'] / 2**20:.2f}" if mem.get(k) is not None else "-" for k in report["memory_methods"]) + " |")
    if report.get("firing_rates"):
        lines += ["", "Firing rates per layer (spikes / neuron / step, spikingjelly backend, real states):", "",
                  "| coding T | B | conv1 | conv2 | conv3 | fc1 |", "|---|---|---|---|---|---|"]
        for fr in report["firing_rates"]:
            lines.append(f"| {fr['coding']} {fr['T']} | {fr['B']} | " + " | ".join(f"{r:.4f}" for r in fr["rates"]) + " |")
    for p in report["play"]:
        lines += ["", f"`evaluate` ({report['env_id']}, spikingjelly, {p['coding']} T={p['T']}, {p['n_envs']} envs, "
                  f"{p['episodes']} episodes capped at {p['max_steps']} steps, DQN games then SNN games): "
                  f"{p['agent_steps']} agent steps in {p['wall_s']:.1f} s ({report['clock']} clock) = **{p['agent_steps_per_s']:.1f} agent steps/s** "
                  f"(SNN games alone {p['snn_games_agent_steps_per_s']:.1f}/s)."]
    if report.get("profile"):
        lines += ["", "Time breakdown of one `readouts` call (ms, spikingjelly backend):", ""]
        for prof in report["profile"]:
            lines.append(f"- T={prof['T']}, B={prof['B']}: total {1e3 * prof['total_s']:.1f} ms "
                         f"(matches library: {prof['matches_library']}): " + ", ".join(
                             f"{k} {1e3 * v:.1f}" for k, v in sorted(prof["parts_s"].items(), key=lambda kv: -kv[1])))
    for sp in report.get("crossover", []):
        lines += ["", f"Dense vs event-driven synapses ({sp['coding']}, T={sp['T']}, B={sp['B']}: "
                  f"{sp['rows'][0]['maps']} output maps, ms):", "",
                  "| layer | input firing rate | dense pass | event-driven | dense / event-driven |", "|---|---|---|---|---|"]
        for r in sp["rows"]:
            lines.append(f"| {r['layer']} | {r['rate']} ({r['measured_rate']:.4f}) | {r['dense_ms']:.2f} | "
                         f"{r['events_ms']:.2f} | {r['dense_ms'] / r['events_ms']:.2f} |")
    if report.get("delta"):
        lines += delta_markdown(report["delta"], report["clock"])
    lines += ["", f"Total wall time {report['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- main
def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


@torch.no_grad()
def measure_coding(report: dict, args, coding: str, Ts: list[int], snns: dict, sj, q_network, states, sync) -> None:
    """The table rows (and memory, firing rates, profile) of one coding, appended to `report`."""
    naive_net = None if args.no_naive or coding == "binary" else naive_model(sj).to(states.device)
    if naive_net is not None:  # sanity: the naive loop computes the same network (membrane readout)
        x = states[:8]
        agree = (naive_decide(naive_net, x, 32).argmax(1) == sj.readouts(x, 32)["membrane"].argmax(1)).float().mean()
        report["naive_membrane_action_agreement_T32"] = float(agree)
    for T in Ts:
        for B in ints(args.batch):
            x = states[:B]
            dense, factor = dense_call(q_network, states, B * T, args.dense_chunk)
            calls = {name: (lambda snn=snn: snn.readouts(x, T)) for name, snn in snns.items()} | {"dense": dense}
            if args.python_loops:
                calls["dense synapses"] = lambda: dense_synapses(sj, x, T)
                calls["python loops"] = lambda: python_loops(sj, x, T)
            row = {"coding": coding, "T": T, "B": B} | measure_interleaved(calls, sync, args.repeats, "dense")
            row["dense"]["median_s"] *= factor
            for name in calls:
                row[name]["ratio"] *= factor if name != "dense" else 1.0
            sj.readouts(x, T)
            report["firing_rates"].append({"coding": coding, "T": T, "B": B, "rates": sj.last_stats.firing_rates})
            if naive_net is not None:
                # predict from the multi-step time (naive costs about 1.6x the synapse work + per-step overhead)
                previous = [r for r in report["rows"] if r["B"] == B and "median_s" in r.get("naive", {})]
                predicted = (previous[-1]["naive"]["median_s"] * T / previous[-1]["T"] if previous
                             else 2 * row[next(iter(snns))]["median_s"])
                if predicted > NAIVE_LIMIT_S:
                    row["naive"] = {"skipped": f"predicted {predicted:.0f} s per call > {NAIVE_LIMIT_S:.0f} s"}
                else:
                    row["naive"] = measure(lambda: naive_decide(naive_net, x, T), sync, args.repeats)
            for result in row.values():
                if isinstance(result, dict) and "median_s" in result:
                    result["decisions_per_s"] = B / result["median_s"]  # dense: (B*T samples/s) / T
            report["rows"].append(row)
            cells = ", ".join(f"{k} {v['decisions_per_s']:.1f}/s" for k, v in row.items()
                              if isinstance(v, dict) and v.get("decisions_per_s"))
            print(f"{coding} T={T:4d} B={B:3d}: {cells}; load {os.getloadavg()[0]:.1f}", flush=True)
            if not args.no_memory:
                mem = {"coding": coding, "T": T, "B": B}
                for name, snn in snns.items():
                    mem[name], report["memory_method"] = peak_memory(lambda: snn.readouts(x, T), states.device.type)
                if naive_net is not None and row["naive"].get("decisions_per_s") and row["naive"]["median_s"] < 10:
                    mem["naive"], _ = peak_memory(lambda: naive_decide(naive_net, x, T), states.device.type)
                mem["dense (batch B*T)"], _ = peak_memory(dense, states.device.type)
                report["memory"].append(mem)
    if args.profile:
        if coding == "rate":
            report["profile"] = [breakdown(sj, states[:B], T, sync) | {"T": T, "B": B}
                                 for T in ints(args.profile_T) for B in ints(args.profile_batch)]
        report.setdefault("crossover", []).extend(
            event_crossover(sj, states[:B], 8, [0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5], args.repeats, sync)
            for B in (1, 64))


@torch.no_grad()
def measure_delta(report: dict, args, ckpt, calibration, q_network, sync) -> None:
    """The delta-coding rows (see the module doc), appended to report["delta"]."""
    sequence = torch.as_tensor(collect_observations(ckpt, args.delta_states, n_envs=1, seed=1), dtype=torch.float32)
    for T in ints(args.delta_T):
        snn = convert(ckpt, calibration, coding="delta", T=T, percentile=99.99, channel_wise=True)
        snn.carry_state = True
        dense_macs = float(snn.coding.schedule.prepared(snn, T).input_fan.sum()
                           + sum(f.sum() for f in snn.engine.counter.fan_outs))
        for B in ints(args.delta_batch):
            steps = sequence.shape[0] // B
            streams = [s.contiguous() for s in sequence[: steps * B].reshape(B, steps, *sequence.shape[1:]).transpose(0, 1)]
            rows, window, cursor, counts = list(range(B)), args.delta_window, {"delta": 0, "dqn": 0}, []
            snn.reset_state()

            def run(name, decide):
                def call():
                    for _ in range(window):
                        decide(streams[cursor[name] % steps])
                        cursor[name] += 1
                return call

            def delta_decision(x):
                snn.readouts(x, T, rows=rows)
                counts.append(snn.last_stats)

            timed = measure_interleaved({"delta": run("delta", delta_decision), "dqn": run("dqn", q_network)},
                                        sync, args.repeats, "dqn")
            row = {"T": T, "B": B, "window": window, "decisions": cursor["delta"] * B,
                   "load_average": os.getloadavg()[0]}
            for name in ("delta", "dqn"):
                row[f"{name}_ms_per_call"] = 1e3 * timed[name]["median_s"] / window
            row["dqn_over_delta"] = timed["delta"]["ratio"]
            def mean(values: list[torch.Tensor]) -> float:
                return float(torch.cat([v.double() for v in values]).mean())  # per decision

            row["input_events"] = mean([c.input_events for c in counts])
            row["graded_events"] = [mean([c.spikes[i] for c in counts]) for i in range(len(counts[0].spikes))]
            row["binary_spikes"] = [mean([c.binary_spikes[i] for c in counts]) for i in range(len(counts[0].spikes))]
            row["neuron_updates"] = [mean([c.neuron_updates[i] for c in counts]) for i in range(len(counts[0].neuron_updates))]
            row["synaptic_ops"] = mean([c.input_synaptic_ops + c.synaptic_ops for c in counts])
            row["share_of_dense_macs"] = row["synaptic_ops"] / dense_macs
            report.setdefault("delta", []).append(row)
            print(f"delta T={T} B={B}: {row['delta_ms_per_call']:.2f} ms vs DQN {row['dqn_ms_per_call']:.2f} ms per call "
                  f"(DQN/delta {row['dqn_over_delta']:.2f}); {row['share_of_dense_macs']:.3f} of the dense MACs; "
                  f"load {row['load_average']:.1f}", flush=True)


def delta_markdown(rows: list[dict], clock_name: str) -> list[str]:
    """The delta table and its events per decision."""
    lines = ["", f"Delta coding over consecutive game states ({clock_name} clock; ms per call of B decisions, median "
             "of interleaved windows; DQN/delta > 1: the delta decision is faster). Events per decision (mean): "
             "changed inputs; graded events of the spiking layers; the binary spikes the same changes would take; "
             "synaptic operations (input's included) and their share of the dense pass's MACs.", "",
             "| T | B | delta ms | DQN ms | DQN/delta | changed inputs | graded events | binary spikes | "
             "synaptic ops | share of MACs | load |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['T']} | {r['B']} | {r['delta_ms_per_call']:.2f} | {r['dqn_ms_per_call']:.2f} | "
                     f"{r['dqn_over_delta']:.2f} | {r['input_events']:,.0f} | {sum(r['graded_events']):,.0f} | "
                     f"{sum(r['binary_spikes']):,.0f} | {r['synaptic_ops']:,.0f} | {r['share_of_dense_macs']:.3f} | "
                     f"{r['load_average']:.1f} |")
    return lines


def python_loops(snn, x: torch.Tensor, T: int):
    """`snn.readouts(x, T)` with the compiled C loops switched off: Python loops and dense synapses."""
    with fused_scan.switched_off():
        return snn.readouts(x, T)


def dense_synapses(snn, x: torch.Tensor, T: int):
    """`snn.readouts(x, T)` with the C neuron loops but dense synaptic passes (no event-driven synapses)."""
    snn.options.event_driven = False
    try:
        return snn.readouts(x, T)
    finally:
        snn.options.event_driven = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=FIXTURE)
    parser.add_argument("--T", default="8,32,128,500", help="time steps per decision (rate coding)")
    parser.add_argument("--binary-T", default="8", help="bits per activation (binary coding)")
    parser.add_argument("--batch", default="1,8,64", help="decisions per call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell (median); heavy cells get fewer")
    parser.add_argument("--backends", default="spikingjelly,snntorch")
    parser.add_argument("--coding", default="rate", help="rate (the paper), binary (T-bit codes, no naive loop), or both: "
                        "rate,binary; none: only the delta rows")
    parser.add_argument("--python-loops", action="store_true", help="also time the Python loops the fused C loops replace")
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                        help="wall time, or process CPU time (with --threads 1: robust to a loaded machine)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--states", type=int, default=2000, help="real states collected (calibration + inputs)")
    parser.add_argument("--dense-chunk", type=int, default=2048, help="largest batch the dense bound is evaluated at")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--play-T", type=int, default=64, help="T of the timed evaluate (rate coding)")
    parser.add_argument("--play-binary-T", type=int, default=8, help="T of the timed evaluate (binary coding)")
    parser.add_argument("--play-envs", type=int, default=8)
    parser.add_argument("--play-episodes", type=int, default=8)
    parser.add_argument("--play-max-steps", type=int, default=300, help="step cap per episode; 0 skips the evaluation")
    parser.add_argument("--profile", action="store_true", help="add the time breakdown and the event-driven vs dense crossover")
    parser.add_argument("--profile-T", default="32,128")
    parser.add_argument("--profile-batch", default="8,64")
    parser.add_argument("--delta-T", default="", help="bits of the delta-coded rows (e.g. 8; none by default)")
    parser.add_argument("--delta-batch", default="1,8", help="streams of consecutive states per delta call")
    parser.add_argument("--delta-window", type=int, default=40, help="consecutive decisions per timed delta call")
    parser.add_argument("--delta-states", type=int, default=2000, help="consecutive states of the delta streams")
    parser.add_argument("--out", type=Path, default=Path("runs/simulation_speed"), help="writes OUT.md and OUT.json")
    args = parser.parse_args()

    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    if device.startswith("cuda") and args.clock == "cpu":
        raise SystemExit("--clock cpu times the host only: use --clock wall on a GPU")
    sync = make_sync(device)
    started = time.time()
    wall_start = time.perf_counter()

    ckpt = load_dqn(str(args.checkpoint))
    states_np = collect_observations(ckpt, args.states)
    q_network = ckpt.q_network.to(device).eval()
    states = torch.as_tensor(states_np).to(device=device, dtype=torch.float32)
    backends = [b for b in args.backends.split(",") if b]
    report = {
        "checkpoint": args.checkpoint.name, "env_id": ckpt.env_id, "machine": machine(device),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)), "clock": args.clock,
        "fused_scan": compile_latency(), "backends": backends, "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [], "memory": [], "firing_rates": [], "play": [],
    }
    for coding in [c for c in args.coding.split(",") if c and c != "none"]:
        snns = {backends[0]: convert(ckpt, states_np, backend=backends[0], coding=coding)}
        for name in backends[1:]:
            snns[name] = convert(ckpt, None, backend=name, scales=snns[backends[0]].scales, coding=coding)
        for snn in snns.values():
            snn.to(device)
        sj = snns.get("spikingjelly") or convert(ckpt, None, backend="spikingjelly", scales=snns[backends[0]].scales,
                                                 coding=coding).to(device)
        Ts = ints(args.T if coding == "rate" else args.binary_T)
        measure_coding(report, args, coding, Ts, snns, sj, q_network, states, sync)
        if args.play_max_steps > 0:
            settings = RunSettings(episodes=args.play_episodes, n_envs=args.play_envs, max_steps=args.play_max_steps,
                                   coding=coding)
            T = args.play_T if coding == "rate" else args.play_binary_T
            report["play"].append(evaluate_speed(ckpt, sj.cpu() if device == "cpu" else sj, T, settings))
            print(f"evaluate ({coding}, T={T}): {report['play'][-1]['agent_steps_per_s']:.1f} agent steps/s", flush=True)
    if args.delta_T:
        measure_delta(report, args, ckpt, states_np, q_network, sync)
    report["memory_methods"] = backends + ([] if args.no_naive else ["naive"]) + ["dense (batch B*T)"]

    report["wall_s"] = time.perf_counter() - wall_start
    report["load_average_end"] = os.getloadavg()
    text = markdown(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out.with_suffix(".md"), text)
    write_text(args.out.with_suffix(".json"), json.dumps(report, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
