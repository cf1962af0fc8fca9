"""Wall time of one small benchmark grid run plainly and on a local Ray, and Ray's overhead per cell.

Three runs of the same grid (games x settings, tiny protocol), each with its own empty calibration
cache so that each does the same work: (1) plain, one cell after another in this process with one
torch thread; (2) Ray with 1 CPU (cells one at a time, as plain): its time outside `ray.init` and
the cells' own wall times is Ray's overhead per cell (worker processes, shipping checkpoints and
records); (3) Ray with every CPU of the machine, 1 CPU per cell. Ray runs on 127.0.0.1 only. Writes a JSON report (timings, per-cell wall times) and
checks that all three give the same numbers.

    python benchmarks/ray_overhead.py --out runs/ray_overhead.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback (read when ray is imported)
os.environ.setdefault("TQDM_DISABLE", "1")

import _common  # noqa: E402  (benchmarks/ is on sys.path when this script runs)
from dqn2snn_plugin.experiments.settings import RunSettings  # noqa: E402
from dqn2snn_plugin.adapters.ray import RayRunner, connected  # noqa: E402
from dqn2snn_plugin.experiments import evaluation as ev  # noqa: E402
from dqn2snn_plugin.experiments import grid  # noqa: E402
from dqn2snn_plugin.io.results import write_json  # noqa: E402


def timed_run(name: str, games, settings, run_settings, work: Path, ray_cpus: int | None) -> dict:
    """One run of the grid into its own directory and cache; Ray started inside the timing when asked."""
    os.environ["DQN2SNN_CACHE"] = str(work / f"cache-{name}")  # Ray workers inherit it at ray.init
    start = time.perf_counter()
    table, init_s = grid.Grid(games, settings, run_settings, work / name), 0.0
    if ray_cpus is None:
        rows = table.run()
    else:
        import ray

        ray.init(num_cpus=ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        init_s = time.perf_counter() - start
        try:
            with connected(ray.get_runtime_context().gcs_address):
                rows = table.run(RayRunner())
        finally:
            ray.shutdown()
    wall = time.perf_counter() - start
    cells = [r["wall_s"] for r in table.log.records]
    return {"name": name, "wall_s": wall, "ray_init_s": init_s, "cell_wall_s": cells,
            "outside_cells_s": wall - init_s - sum(cells), "rows": [row[:-1] for row in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_game_options(parser, games="Breakout,Pong", threads=1)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--calibration-frames", type=int, default=500)
    parser.add_argument("--out", required=True, help="JSON report")
    args = _common.parse(parser)
    games = grid.unique_games([ev.load_checked(_common.checkpoint_source(game, args.fixtures))
                               for game in _common.games(args)])
    settings = [grid.Setting("rate", 16, 99.9), grid.BEST_SETTING]
    run_settings = RunSettings(episodes=args.episodes, max_steps=args.max_steps,
                               calibration_frames=args.calibration_frames, n_envs=args.episodes)
    cpus, load_before = len(os.sched_getaffinity(0)), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [timed_run("plain", games, settings, run_settings, Path(tmp), None),
                timed_run("ray-1cpu", games, settings, run_settings, Path(tmp), 1),
                timed_run(f"ray-{cpus}cpu", games, settings, run_settings, Path(tmp), cpus)]
    n = len(games) * len(settings)
    report = {"cells": n, "settings": run_settings.as_config(), "load_before": load_before, "load_after": os.getloadavg(),
              "same_numbers": all(run["rows"] == runs[0]["rows"] for run in runs),
              "ray_overhead_per_cell_s": runs[1]["outside_cells_s"] / n, "runs": runs}
    write_json(args.out, report)
    for run in runs:
        print(f"{run['name']}: {run['wall_s']:.1f} s for {n} cells (ray.init {run['ray_init_s']:.1f} s, sum of cell "
              f"walls {sum(run['cell_wall_s']):.1f} s, outside cells {run['outside_cells_s']:.1f} s)")
    print(f"same numbers: {report['same_numbers']}; Ray overhead per cell (1-CPU Ray: outside cells / cells): "
          f"{report['ray_overhead_per_cell_s']:.1f} s; load average before {load_before}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
