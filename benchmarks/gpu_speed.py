"""GPU acting speed (issue 16): one decision as one CUDA-graph replay, against the dense bound and SpikingJelly.

Eager on a GPU, a decision at small B is bound by kernel launches (our simulation is a few hundred
small kernels per decision: about 300 decisions/s at any T on an H100). Here the whole per-decision
simulation, `snn.readouts(x, T)` with our torch-op IF scan, is captured once as a CUDA graph and
replayed per decision (the observation copied into the graph's input buffer). For rate coding at
each T in --T and B in --batch, on real Breakout states, decisions per second of:
  sj eager     SpikingJelly's own multi-step IF kernel (SJ_IF_CUDA_IMPLEMENTATION; this script
               defaults it to triton, the anchor of the issue: 0.18x the dense bound at T = 32, B = 1)
  scan eager   our scan, launched op by op
  scan graph   the same, replayed as one CUDA graph (readouts checked equal to scan eager)
  dense        the DQN at batch B*T, divided by T (eager, and replayed as a CUDA graph)
Without CUDA, or with --device cpu, it runs the eager paths on the CPU as a smoke check (no graphs,
no GPU figures) and says so.

    python benchmarks/gpu_speed.py --out runs/gpu_speed            # on a GPU machine, ~2 min
    python benchmarks/gpu_speed.py --device cpu --T 8 --batch 1     # smoke check anywhere
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("SJ_IF_CUDA_IMPLEMENTATION", "triton")  # read when SpikingJelly is imported

import torch  # noqa: E402

import _common  # noqa: E402  (benchmarks/ is on sys.path when this script runs)
from dqn2snn_plugin import convert, load_dqn  # noqa: E402
from dqn2snn_plugin.adapters.spikingjelly import SpikingJellyBackend  # noqa: E402
from dqn2snn_plugin.calibration import collect_observations  # noqa: E402
from dqn2snn_plugin.io.results import write_text  # noqa: E402


def per_call(fn, repeats: int, calls: int, sync) -> float:
    """Median over `repeats` of the seconds per call of `calls` back-to-back calls (after a warm-up)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def graphed(fn, static_x: torch.Tensor):
    """`fn(static_x)` captured as a CUDA graph: returns (replay(x) -> outputs, the outputs it fills)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # allocations and kernel selection happen before capture
            fn(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn(static_x)

    def replay(x: torch.Tensor):
        static_x.copy_(x)
        graph.replay()
        return outputs

    return replay, outputs


@torch.no_grad()
def cell(snn_sj, snn_scan, q_network, states: torch.Tensor, T: int, B: int, args, sync) -> dict:
    x = states[:B].clone()
    dense_x = states[torch.arange(B * T) % states.shape[0]].clone()
    calls = {"sj eager": lambda: snn_sj.readouts(x, T), "scan eager": lambda: snn_scan.readouts(x, T),
             "dense eager": lambda: q_network(dense_x)}
    row = {"T": T, "B": B}
    if x.is_cuda:
        replay, outputs = graphed(lambda inp: snn_scan.readouts(inp, T), x.clone())
        replay(x)
        sync()
        eager = snn_scan.readouts(x, T)
        row["graph_equals_eager"] = all(torch.equal(outputs[k], eager[k]) for k in eager)
        dense_replay, _ = graphed(q_network, dense_x.clone())
        calls |= {"scan graph": lambda: replay(x), "dense graph": lambda: dense_replay(dense_x)}
    for name, fn in calls.items():
        seconds = per_call(fn, args.repeats, args.calls, sync)
        row[name] = {"s_per_call": seconds, "decisions_per_s": B / seconds}
    dense = max(row[k]["decisions_per_s"] for k in ("dense eager", "dense graph") if k in row)
    for name in calls:
        if not name.startswith("dense"):
            row[name]["over_dense"] = row[name]["decisions_per_s"] / dense
    return row


def markdown(report: dict) -> str:
    names = ["sj eager", "scan eager", "scan graph", "dense eager", "dense graph"]
    names = [n for n in names if n in report["rows"][0]]
    head = ["T", "B"] + names + [f"{n} / dense" for n in names if not n.startswith("dense")]
    lines = [f"# GPU acting speed ({report['device']}, {report['started_utc']})", "",
             f"SJ_IF_CUDA_IMPLEMENTATION={report['sj_if_cuda_implementation']}; decisions/s, median of "
             f"{report['repeats']} x {report['calls']} calls; dense = the faster of the DQN eager / graphed "
             "at batch B*T, over T.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        cells = [str(row["T"]), str(row["B"])] + [f"{row[n]['decisions_per_s']:,.0f}" for n in names]
        cells += [f"{row[n]['over_dense']:.2f}" for n in names if not n.startswith("dense")]
        lines.append("| " + " | ".join(cells) + " |")
    if "graph_equals_eager" in report["rows"][0]:
        lines += ["", "Graph readouts equal eager readouts: "
                  + ", ".join(f"T={r['T']} B={r['B']}: {r['graph_equals_eager']}" for r in report["rows"])]
    if report["note"]:
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=_common.SHIPPED, help="default: the shipped Breakout DQN")
    parser.add_argument("--T", default="8,32", help="time steps per decision (rate coding)")
    parser.add_argument("--batch", default="1,8,64", help="decisions per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per cell (median)")
    parser.add_argument("--calls", type=int, default=20, help="back-to-back calls per round")
    parser.add_argument("--states", type=int, default=500, help="real states collected (calibration + inputs)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke check of the script")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_speed"), help="writes OUT.md and OUT.json")
    args = parser.parse_args()
    note = ""
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        device, note = "cpu", "No CUDA device here: eager paths on the CPU only, as a smoke check (not a GPU figure)."
    elif device == "cpu":
        note = "--device cpu: eager paths on the CPU only, as a smoke check (not a GPU figure)."
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    ckpt = load_dqn(str(args.checkpoint))
    states_np = collect_observations(ckpt, args.states)
    snn_sj = convert(ckpt, states_np, backend="spikingjelly")
    snn_sj.backend = SpikingJellyBackend("spikingjelly" if device.startswith("cuda") else "auto")
    snn_scan = copy.deepcopy(snn_sj)
    snn_scan.backend = SpikingJellyBackend("scan")
    snn_sj.to(device), snn_scan.to(device)
    q_network = ckpt.q_network.to(device).eval()
    states = torch.as_tensor(states_np).to(device=device, dtype=torch.float32)
    report = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "note": note,
              "sj_if_cuda_implementation": os.environ["SJ_IF_CUDA_IMPLEMENTATION"],
              "repeats": args.repeats, "calls": args.calls, "rows": []}
    for T in (int(v) for v in args.T.split(",")):
        for B in (int(v) for v in args.batch.split(",")):
            report["rows"].append(cell(snn_sj, snn_scan, q_network, states, T, B, args, sync))
            print(json.dumps(report["rows"][-1], default=float), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    write_text(args.out.with_suffix(".md"), text)
    write_text(args.out.with_suffix(".json"), json.dumps(report, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
