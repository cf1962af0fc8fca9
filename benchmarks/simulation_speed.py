"""Simulation speed of the converted Nature-CNN (issue 5): decisions per second vs the dense bound.

For T in {8, 32, 128, 500} and batch B in {1, 8, 64}, on real Atari states of a fixture DQN:
  (a) our multi-step simulation, `snn.readouts(obs, T)`, for each backend (spikingjelly, snntorch);
  (b) a naive per-time-step loop over the whole network: SpikingJelly's converted model `snn.native`
      in single-step mode, `functional.reset_net` per decision, the full forward (first conv
      included) on [B] inputs at every step, output current summed over T;
  (c) the dense bound: the DQN's throughput at batch B*T divided by T (evaluated in chunks of at most
      --dense-chunk samples: per-sample throughput no longer grows at that size).
The figure of merit is (a)/(c). Also: peak memory per decision, firing rates per layer, and agent
steps per second of a full SNN evaluation (T = 64, 8 envs). `--profile` adds the time breakdown of
one simulation (synapse passes / IF scans / bookkeeping) and the sparse-vs-dense fc1 crossover.

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
import torch.nn.functional as F

from dqn2snn_plugin import convert, load_dqn
from dqn2snn_plugin.calibration import collect_observations

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "atari-dqn" / "BreakoutNoFrameskip-v4.qnet.pt"
NAIVE_LIMIT_S = 60.0  # skip a naive-loop cell whose single call is predicted to take longer than this
HEAVY_S = 2.0  # a cell whose warm-up call took longer than this gets fewer repeats


# ----------------------------------------------------------------------------------------- timing
def make_sync(device: str):
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(fn, sync, repeats: int) -> dict:
    """Warm up once (timed, to size the repeats), then the median of up to `repeats` timed calls."""
    warm = timed(fn, sync)
    n = repeats if warm < HEAVY_S else max(1, min(repeats, 2 if warm < 5 * HEAVY_S else 1))
    times = [timed(fn, sync) for _ in range(n)]
    return {"median_s": statistics.median(times), "times_s": times, "warmup_s": warm}


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
    """SpikingJelly's converted model in single-step mode: what a SpikingJelly user runs step by step."""
    from spikingjelly.activation_based import functional

    net = copy.deepcopy(snn.native)
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


@torch.no_grad()
def dense_time(q_network, states: torch.Tensor, n: int, chunk: int, sync, repeats: int) -> dict:
    """Seconds for the DQN to evaluate n states (real states, cycled), in chunks of at most `chunk`."""
    size = min(n, chunk)
    idx = torch.arange(size) % states.shape[0]
    x = states[idx]

    def run():
        q_network(x)

    result = measure(run, sync, repeats)
    result["median_s"] *= n / size  # per-sample throughput at batch `size` applied to n samples
    result["evaluated_batch"] = size
    return result


# ----------------------------------------------------------------------------------------- play
def play_speed(snn, env_id: str, T: int, n_envs: int, episodes: int, max_steps: int) -> dict:
    from dqn2snn_plugin.atari import play

    counted = {"steps": 0, "calls": 0, "policy_s": 0.0}

    def policy(obs):
        start = time.perf_counter()
        actions = snn.act(obs, T=T).cpu().numpy()
        counted["policy_s"] += time.perf_counter() - start
        counted["steps"] += len(obs)
        counted["calls"] += 1
        return actions

    start = time.perf_counter()
    results = play(policy, env_id=env_id, episodes=episodes, n_envs=n_envs, max_steps=max_steps)
    wall = time.perf_counter() - start
    return {
        "T": T, "n_envs": n_envs, "episodes": episodes, "max_steps": max_steps,
        "agent_steps": counted["steps"], "policy_calls": counted["calls"], "wall_s": wall,
        "policy_s": counted["policy_s"], "agent_steps_per_s": counted["steps"] / wall,
        "episode_lengths": [r.length for r in results], "scores": [r.score for r in results],
    }


# ----------------------------------------------------------------------------------------- profile
def layer_name(synapse) -> str:
    names = {torch.nn.Conv2d: "conv", torch.nn.Linear: "fc"}
    layers = [m for m in synapse if type(m) in names]
    return f"{names[type(layers[-1])]}:{'x'.join(str(d) for d in layers[-1].weight.shape[:2])}"


@torch.no_grad()
def breakdown(snn, x: torch.Tensor, T: int, sync) -> dict:
    """`SpikingQNetwork._simulate` step by step (fresh membranes, one chunk), with a timer per part.

    Mirrors the library's code (dqn2snn_plugin/spiking.py) so that the parts add up to one call;
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
    ops = torch.zeros(x.shape[0], device=x.device)
    for index, (neuron, synapse) in enumerate(zip(snn.neurons, snn.synapses[1:])):
        v0 = tick("bookkeeping: v0/alloc", lambda: torch.full_like(current[0], snn.initial_membrane))
        spikes, v = tick(f"IF scan after {layer_name(snn.synapses[index])}", lambda: snn.backend.run(neuron, current, v0))

        def stats(spikes=spikes, index=index):
            totals = spikes.sum(0)
            totals.flatten(1).sum(1)
            return totals

        totals = tick("bookkeeping: spike totals", stats)
        fan = snn._fan_out[index]
        ops = tick("bookkeeping: synaptic_ops fan-out", lambda: ops + (totals * fan.to(totals.device)).flatten(1).sum(1))
        current = tick(f"synapse {layer_name(synapse)}",
                       lambda: synapse(spikes.flatten(0, 1)).unflatten(0, spikes.shape[:2]))
    v0 = torch.full_like(current[0], snn.initial_membrane)
    out_spikes, v_out = tick("IF scan output", lambda: snn.backend.run(snn.output_neuron, current / snn.scales.output, v0))
    cum = tick("readout: cumsum", lambda: (current.cumsum(0), out_spikes.cumsum(0)))
    value = (cum[1][T - 1] + v_out - v0) * snn.scales.output / T
    total = time.perf_counter() - total_start
    reference = snn.readouts(x, T)["spikes+membrane"]
    return {"parts_s": parts, "total_s": total, "matches_library": bool(torch.allclose(value, reference, atol=1e-5))}


def first_current(snn, x: torch.Tensor, T: int) -> torch.Tensor:
    """The first layer's input current [T, B, ...]: constant analog input, computed once."""
    first = snn.synapses[0](x)
    return first.expand(T, *first.shape)


@torch.no_grad()
def sparse_fc1(snn, x: torch.Tensor, T: int, rates: list[float], repeats: int, sync) -> dict:
    """Dense F.linear vs event-driven fc1 on spike matrices [T*B, 3136] at several firing rates.

    "real": the layer-3 spikes of `x`; other rates: Bernoulli spikes at that rate (same shape).
    Sparse variants include building the sparse representation from the dense spike tensor:
      sparse.mm: torch.sparse.mm(S.to_sparse(), W^T);
      gather: rows, cols = S.nonzero(); out.index_add_(0, rows, W^T[cols]) (events x 512 adds).
    """
    fc1 = [m for m in snn.synapses[-2] if isinstance(m, torch.nn.Linear)][0]
    weight, bias, weight_t = fc1.weight, fc1.bias, fc1.weight.t().contiguous()
    # real layer-3 spikes
    current = first_current(snn, snn._prepare(x), T)
    for index in range(3):
        v0 = torch.full_like(current[0], snn.initial_membrane)
        spikes, _ = snn.backend.run(snn.neurons[index], current, v0)
        if index < 2:
            current = snn.synapses[index + 1](spikes.flatten(0, 1)).unflatten(0, spikes.shape[:2])
    real = spikes.flatten(0, 1).flatten(1).contiguous()
    sets = [("real", lambda: real)] + [(f"{r:g}", lambda r=r: (torch.rand_like(real) < r).float()) for r in rates]

    def dense(s):
        return F.linear(s, weight, bias)

    def spmm(s):
        return torch.sparse.mm(s.to_sparse(), weight_t) + bias

    def gather(s, block=256):  # row blocks bound the [events, 512] gather buffer
        out = bias.expand(s.shape[0], -1).clone()
        for start in range(0, s.shape[0], block):
            rows, cols = s[start : start + block].nonzero(as_tuple=True)
            out[start : start + block].index_add_(0, rows, weight_t.index_select(0, cols))
        return out

    assert torch.allclose(dense(real), gather(real), atol=1e-4) and torch.allclose(dense(real), spmm(real), atol=1e-4)
    rows = []
    for name, make in sets:
        s = make()
        row = {"rate": name, "measured_rate": float(s.mean()), "shape": list(s.shape)}
        for label, fn in (("dense_ms", dense), ("sparse_mm_ms", spmm), ("gather_ms", gather)):
            row[label] = 1e3 * measure(lambda: fn(s), sync, max(repeats, 5))["median_s"]
        rows.append(row)
    return {"T": T, "B": x.shape[0], "rows": rows}


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


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Simulation speed ({report['checkpoint']}, {report['started_utc']})", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, device {m['device']}"
        + (f" ({m['gpu']}, SJ_IF_CUDA_IMPLEMENTATION={m['SJ_IF_CUDA_IMPLEMENTATION'] or 'default'})" if "gpu" in m else "")
        + f"; load average at start {m['load_average_start'][0]:.2f}, at end {report['load_average_end'][0]:.2f}.",
        "",
        "Decisions per second (median of repeats; a decision = one state simulated for T steps).",
        "(a) = `snn.readouts(obs, T)`; naive = SpikingJelly `snn.native` single-step loop; "
        "dense = DQN throughput at batch B*T / T. Figure of merit: (a)/(dense).", "",
    ]
    backends = report["backends"]
    head = ["T", "B"] + [f"(a) {b}" for b in backends] + ["(b) naive", "(c) dense"] + [f"(a)/(c) {b}" for b in backends] + ["(a) sj / (b) naive"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in report["rows"]:
        ours = [row.get(b, {}).get("decisions_per_s") for b in backends]
        naive = row.get("naive", {}).get("decisions_per_s")
        dense = row["dense"]["decisions_per_s"]
        ratios = [f"{o / dense:.3f}" if o else "-" for o in ours]
        sj = row.get("spikingjelly", {}).get("decisions_per_s")
        speedup = f"{sj / naive:.1f}x" if sj and naive else "-"
        naive_cell = fmt_rate(naive) if "naive" in row else "not run"
        cells = [str(row["T"]), str(row["B"])] + [fmt_rate(o) for o in ours] + [naive_cell, fmt_rate(dense)] + ratios + [speedup]
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [f"T={r['T']},B={r['B']}: {r['naive']['skipped']}" for r in report["rows"] if "skipped" in r.get("naive", {})]
    if skipped:
        lines += ["", "Naive loop skipped: " + "; ".join(skipped)]
    if report.get("memory"):
        lines += ["", f"Peak memory per decision (MiB; {report['memory_method']}):", "",
                  "| T | B | " + " | ".join(report["memory_methods"]) + " |", "|" + "---|" * (2 + len(report["memory_methods"]))]
        for mem in report["memory"]:
            lines.append(f"| {mem['T']} | {mem['B']} | " + " | ".join(
                f"{mem[k] / mem['B'] / 2**20:.2f}" if mem.get(k) is not None else "-" for k in report["memory_methods"]) + " |")
    if report.get("firing_rates"):
        lines += ["", "Firing rates per layer (spikes / neuron / step, spikingjelly backend, real states):", "",
                  "| T | B | conv1 | conv2 | conv3 | fc1 |", "|---|---|---|---|---|---|"]
        for fr in report["firing_rates"]:
            lines.append(f"| {fr['T']} | {fr['B']} | " + " | ".join(f"{r:.4f}" for r in fr["rates"]) + " |")
    if report.get("play"):
        p = report["play"]
        lines += ["", f"Full evaluation ({report['env_id']}, spikingjelly, T={p['T']}, {p['n_envs']} envs, "
                  f"{p['episodes']} episodes, max {p['max_steps']} steps): {p['agent_steps']} agent steps in "
                  f"{p['wall_s']:.1f} s = **{p['agent_steps_per_s']:.1f} agent steps/s** "
                  f"({p['policy_calls']} policy calls, {p['policy_s']:.1f} s in the SNN)."]
    if report.get("profile"):
        lines += ["", "Time breakdown of one `readouts` call (ms, spikingjelly backend):", ""]
        for prof in report["profile"]:
            lines.append(f"- T={prof['T']}, B={prof['B']}: total {1e3 * prof['total_s']:.1f} ms "
                         f"(matches library: {prof['matches_library']}): " + ", ".join(
                             f"{k} {1e3 * v:.1f}" for k, v in sorted(prof["parts_s"].items(), key=lambda kv: -kv[1])))
        for sp in report.get("sparse_fc1", []):
            lines += ["", f"fc1 dense vs event-driven (T={sp['T']}, B={sp['B']}, spikes [{sp['rows'][0]['shape'][0]}, 3136], ms):", "",
                      "| firing rate | dense F.linear | torch.sparse.mm | nonzero+index_add |", "|---|---|---|---|"]
            for r in sp["rows"]:
                lines.append(f"| {r['rate']} ({r['measured_rate']:.4f}) | {r['dense_ms']:.2f} | {r['sparse_mm_ms']:.2f} | {r['gather_ms']:.2f} |")
    lines += ["", f"Total wall time {report['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------- main
def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=FIXTURE)
    parser.add_argument("--T", default="8,32,128,500", help="time steps per decision")
    parser.add_argument("--batch", default="1,8,64", help="decisions per call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell (median); heavy cells get fewer")
    parser.add_argument("--backends", default="spikingjelly,snntorch")
    parser.add_argument("--coding", default="rate", choices=["rate", "binary"],
                        help="rate (the paper) or binary spike codes (T = bits, at most 24; no naive loop)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--states", type=int, default=2000, help="real states collected (calibration + inputs)")
    parser.add_argument("--dense-chunk", type=int, default=2048, help="largest batch the dense bound is evaluated at")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--play-T", type=int, default=64)
    parser.add_argument("--play-envs", type=int, default=8)
    parser.add_argument("--play-episodes", type=int, default=8)
    parser.add_argument("--play-max-steps", type=int, default=300, help="0 skips the evaluation")
    parser.add_argument("--profile", action="store_true", help="add the time breakdown and the sparse fc1 study")
    parser.add_argument("--profile-T", default="32,128")
    parser.add_argument("--profile-batch", default="8,64")
    parser.add_argument("--out", type=Path, default=Path("runs/simulation_speed"), help="writes OUT.md and OUT.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    sync = make_sync(device)
    started = time.time()
    wall_start = time.perf_counter()

    ckpt = load_dqn(str(args.checkpoint))
    states_np = collect_observations(ckpt, args.states)
    backends = [b for b in args.backends.split(",") if b]
    snns = {}
    base = convert(ckpt, states_np, backend=backends[0], coding=args.coding)
    snns[backends[0]] = base
    for name in backends[1:]:
        snns[name] = convert(ckpt, None, backend=name, scales=base.scales, coding=args.coding)
    sj = snns.get("spikingjelly") or convert(ckpt, None, backend="spikingjelly", scales=base.scales)
    for snn in snns.values():
        snn.to(device)
    q_network = ckpt.q_network.to(device).eval()
    states = torch.as_tensor(states_np).to(device=device, dtype=torch.float32)
    naive_net = None if args.no_naive or args.coding == "binary" else naive_model(sj).to(device)

    report = {
        "checkpoint": args.checkpoint.name, "env_id": ckpt.env_id, "machine": machine(device),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "backends": backends, "args": {k: str(v) for k, v in vars(args).items()}, "rows": [],
    }
    if naive_net is not None:  # sanity: the naive loop computes the same network (membrane readout)
        x = states[:8]
        agree = (naive_decide(naive_net, x, 32).argmax(1) == sj.readouts(x, 32)["membrane"].argmax(1)).float().mean()
        report["naive_membrane_action_agreement_T32"] = float(agree)

    memory, firing = [], []
    with torch.no_grad():
        for T in ints(args.T):
            for B in ints(args.batch):
                x = states[:B]
                row = {"T": T, "B": B}
                for name, snn in snns.items():
                    result = measure(lambda: snn.readouts(x, T), sync, args.repeats)
                    result["decisions_per_s"] = B / result["median_s"]
                    row[name] = result
                    if name == "spikingjelly" or (name == backends[0] and "spikingjelly" not in snns):
                        firing.append({"T": T, "B": B, "rates": snn.last_stats.firing_rates})
                if naive_net is not None:
                    # predict from the multi-step time (naive costs about 1.6x the synapse work + per-step overhead)
                    ref = row.get("spikingjelly", row[backends[0]])["median_s"]
                    previous = [r for r in report["rows"] if r["B"] == B and "median_s" in r.get("naive", {})]
                    predicted = previous[-1]["naive"]["median_s"] * T / previous[-1]["T"] if previous else 2 * ref
                    if predicted > NAIVE_LIMIT_S:
                        row["naive"] = {"skipped": f"predicted {predicted:.0f} s per call > {NAIVE_LIMIT_S:.0f} s",
                                        "decisions_per_s": None}
                    else:
                        result = measure(lambda: naive_decide(naive_net, x, T), sync, args.repeats)
                        result["decisions_per_s"] = B / result["median_s"]
                        row["naive"] = result
                dense = dense_time(q_network, states, B * T, args.dense_chunk, sync, args.repeats)
                dense["decisions_per_s"] = B / dense["median_s"]  # (B*T samples/s) / T
                row["dense"] = dense
                report["rows"].append(row)
                cells = ", ".join(f"{k} {v['decisions_per_s']:.1f}/s" for k, v in row.items()
                                  if isinstance(v, dict) and v.get("decisions_per_s"))
                print(f"T={T:4d} B={B:3d}: {cells}", flush=True)
                if not args.no_memory:
                    mem = {"T": T, "B": B}
                    for name, snn in snns.items():
                        mem[name], method = peak_memory(lambda: snn.readouts(x, T), device)
                    if naive_net is not None and row["naive"].get("decisions_per_s") and row["naive"]["median_s"] < 10:
                        mem["naive"], _ = peak_memory(lambda: naive_decide(naive_net, x, T), device)
                    mem["dense (batch B*T)"], _ = peak_memory(
                        lambda: q_network(states[torch.arange(min(B * T, args.dense_chunk)) % states.shape[0]]), device)
                    memory.append(mem)
                    report["memory_method"] = method
        report["memory"] = memory
        report["memory_methods"] = list(snns) + ([] if naive_net is None else ["naive"]) + ["dense (batch B*T)"]
        report["firing_rates"] = firing
        if args.profile:
            report["profile"] = [breakdown(sj, states[:B], T, sync) | {"T": T, "B": B}
                                 for T in ints(args.profile_T) for B in ints(args.profile_batch)]
            report["sparse_fc1"] = [sparse_fc1(sj, states[:B], T, [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3], args.repeats, sync)
                                    for T, B in [(32, 8), (128, 8)]]
    if args.play_max_steps > 0:
        report["play"] = play_speed(sj, ckpt.env_id, args.play_T, args.play_envs, args.play_episodes, args.play_max_steps)
        print(f"play: {report['play']['agent_steps_per_s']:.1f} agent steps/s", flush=True)

    report["wall_s"] = time.perf_counter() - wall_start
    report["load_average_end"] = os.getloadavg()
    text = markdown(report)
    write_atomically(args.out.with_suffix(".md"), text)
    write_atomically(args.out.with_suffix(".json"), json.dumps(report, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
