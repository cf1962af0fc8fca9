"""Benchmark cells on a local Ray (2 CPUs, loopback only): same numbers as without Ray, each cell once
after a worker died, resume after the driver was killed, a dead address refused within seconds; the
documented cluster flow (`ray start --head`, then --ray HOST:PORT) with Ray 2.60's token authentication,
and a bare --ray unmoved by a cluster file of another run in Ray's temp folder. Without a cluster (a fake
`ray` module): each cell's task gets its own game's checkpoint and its threads, a cell fits a node with
exactly its CPUs, dead nodes are not counted."""

from __future__ import annotations

import json
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from dqn2snn_plugin.adapters.ray import KILL_ONCE_ENV
from dqn2snn_plugin.cli import main
from conftest import ATARI_FIXTURES

# every test here is slow-marked, so that `pytest tests/test_ray.py` runs them all: most start a Ray cluster
# (seconds to a minute); the two on a fake `ray` module take under a second
pytestmark = pytest.mark.slow

QNET = str(ATARI_FIXTURES / "BreakoutNoFrameskip-v4.qnet.pt")
ZIP = str(ATARI_FIXTURES / "dqn-BreakoutNoFrameskip-v4.zip")
TINY_ARGS = ["--episodes", "1", "--max-steps", "40", "--n-envs", "1", "--calibration-frames", "300"]
# what the cluster's workers and the drivers share: one thread, a private calibration cache, Ray on loopback
WORKER_ENV = {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
WHERE = ("host", "ray_node_id", "wall_s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    """A 2-CPU Ray head on 127.0.0.1 started by this process; yields its address (HOST:PORT)."""
    env = {**WORKER_ENV, "DQN2SNN_CACHE": str(tmp_path_factory.mktemp("cache"))}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # before ray.init: the workers inherit it
    import ray
    from ray._private import ray_constants

    assert not ray_constants.ENABLE_RAY_CLUSTER, "ray was imported before the loopback-only setting was made"
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def _records(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / "cells.jsonl").read_text().splitlines()]


def _numbers(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in WHERE}


def _table(directory) -> list[str]:
    """benchmark.md without the last column (the cells' wall times)."""
    return [line.rsplit("|", 2)[0] for line in (directory / "benchmark.md").read_text().splitlines()]


def test_ray_gives_the_plain_table_and_each_cell_once_when_a_worker_dies(cluster, tmp_path, monkeypatch, capsys):
    argv = ["benchmark", QNET, ZIP, "--T", "4", "--coding", "rate,binary", *TINY_ARGS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a 1-CPU Ray cell
    try:
        assert main([*argv, "-o", str(tmp_path / "plain")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert f"{QNET} and {ZIP} hold the same weights: one game" in capsys.readouterr().out

    marker = tmp_path / "killed-once"
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    assert main([*argv, "--ray", cluster, "-o", str(tmp_path / "ray")]) == 0
    assert marker.exists()  # one worker did die mid-cell, and Ray ran its cell again
    assert f"Ray at {cluster}: 1 node(s), 2 CPUs" in capsys.readouterr().out
    assert _table(tmp_path / "ray") == _table(tmp_path / "plain") and len(_table(tmp_path / "ray")) == 4
    here, there = _records(tmp_path / "plain"), _records(tmp_path / "ray")
    assert len(there) == 2 and {r["coding"] for r in there} == {"rate", "binary"}
    by_coding = {r["coding"]: r for r in here}
    for record in there:
        assert _numbers(record) == _numbers(by_coding[record["coding"]])
        assert len(record["ray_node_id"]) == 56 and record["host"] == socket.gethostname() and record["wall_s"] > 0


def test_a_rerun_after_the_driver_was_killed_computes_only_the_missing_cells(cluster, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", QNET, "--T", "2,3,4", *TINY_ARGS, "--max-steps", "20", "--ray", cluster, "-o", str(out)]
    driver = subprocess.Popen([sys.executable, "-m", "dqn2snn_plugin.cli", *argv], env={**os.environ, **WORKER_ENV},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 150
    while not (out / "cells.jsonl").exists() or not (out / "cells.jsonl").read_text():
        assert driver.poll() is None and time.monotonic() < deadline, "the driver ended before it logged a cell"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = (out / "cells.jsonl").read_text()
    done = before.count("\n")
    assert 1 <= done < 3

    assert main(argv) == 0  # this process is the cluster's driver now
    assert f"{3 - done} of 3 cells to compute ({done} already in {out})" in capsys.readouterr().out
    after = (out / "cells.jsonl").read_text()
    assert after.startswith(before)
    assert sorted(r["T"] for r in _records(out)) == [2, 3, 4]


@pytest.mark.parametrize("listening", [False, True], ids=["nothing there", "not a Ray head"])
def test_a_dead_or_wrong_address_is_one_clear_line_within_seconds(listening, capsys, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"
    if listening:
        server.listen()  # accepts TCP, never answers gRPC
    else:
        server.close()
    start = time.monotonic()
    try:
        status = main(["benchmark", QNET, "--ray", address, "-o", str(tmp_path)])
    finally:
        server.close()
    assert status == 2 and time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert err == (f"dqn2snn: error: --ray {address}: no Ray head answers there within 3 s: start one with "
                   "`ray start --head` and pass the address it prints\n")
    assert not (tmp_path / "cells.jsonl").exists()


def test_a_cell_no_node_can_hold_is_refused_instead_of_waiting(cluster, capsys, tmp_path):
    argv = ["benchmark", QNET, "--T", "4", *TINY_ARGS, "--ray", cluster, "--device", "cuda", "--gpus-per-cell", "1"]
    assert main([*argv, "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("dqn2snn: error: no node of the Ray cluster can hold a cell (1 CPU and 1 GPU "
                                       "each): lower --cpus-per-cell / --gpus-per-cell or add nodes\n")
    assert not (tmp_path / "cells.jsonl").exists()


@pytest.fixture
def token_head():
    """A `ray start --head` process on 127.0.0.1 (1 CPU) with Ray 2.60's token authentication: its own
    HOME holding a token (~/.ray/auth_token) and its own temp folder (short paths: Ray's sockets), so it
    shares nothing with other runs here; stopped through its process group by the id this test started.
    Yields (address, environment of a driver that has the token, temp folder holding the cluster file)."""
    root = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    home, temp = root / "home", root / "tmp"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(os.urandom(16).hex())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(WORKER_ENV, HOME=str(home), DQN2SNN_CACHE=str(root / "cache"))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    head = subprocess.Popen([shutil.which("ray", path=os.path.dirname(sys.executable)), "start", "--head",
                             "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                             "--include-dashboard", "false", "--temp-dir", str(temp / "ray"), "--block"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (temp / "ray" / "ray_current_cluster").exists():
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env, temp
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(10)  # Ray's own shutdown takes 35 s on this busy machine: the rest of the group is killed
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(root, ignore_errors=True)


def _cli(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dqn2snn_plugin.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_documented_cluster_flow_works_with_ray_token_authentication(token_head, tmp_path):
    """docs/ray.md: `ray start --head`, then `benchmark --ray HOST:PORT`; the driver finds the token
    where Ray's own loader looks (here ~/.ray/auth_token); without a token, one line says where it goes;
    a bare --ray starts its own Ray though Ray's temp folder names a running cluster."""
    address, env, temp = token_head
    argv = ["benchmark", QNET, "--T", "4", "--episodes", "1", "--max-steps", "10", "--n-envs", "1",
            "--calibration-frames", "50"]
    joined = _cli([*argv, "--ray", address, "-o", str(tmp_path / "joined")], env)
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert f"Ray at {address}: 1 node(s), 1 CPUs" in joined.stdout
    assert len(_records(tmp_path / "joined")) == 1

    no_token = _cli([*argv, "--ray", address, "-o", str(tmp_path / "refused")], {**env, "HOME": str(tmp_path)})
    assert no_token.returncode == 2 and no_token.stderr == (
        f"dqn2snn: error: --ray {address}: the Ray head there uses token authentication and no token is here: "
        "copy the head's token (`ray get-auth-token` on the head) into ~/.ray/auth_token or $RAY_AUTH_TOKEN\n")
    assert not (tmp_path / "refused").exists()

    local = _cli([*argv, "--ray", "-o", str(tmp_path / "local")], {**env, "RAY_TMPDIR": str(temp)})
    assert local.returncode == 0, local.stderr[-2000:]
    assert "Ray at 127.0.0.1:" in local.stdout and f"Ray at {address}" not in local.stdout


# ---------------------------------------------------------------- without a cluster: a fake `ray` module


class _FakeRay:
    """The calls RayRunner makes, recorded; a task's "result" is its index."""

    def __init__(self, nodes: list[tuple[bool, float]]) -> None:
        self._nodes = [{"Alive": alive, "Resources": {"CPU": cpus}} for alive, cpus in nodes]
        self.stored, self.submitted, self.options_given = [], [], {}

    def nodes(self):
        return self._nodes

    def cluster_resources(self):
        return {"CPU": 6.0, "GPU": 1.0}

    def put(self, value):
        self.stored.append(value)
        return f"ref-{value}"

    def remote(self, function):
        fake = self

        class Task:
            def options(self, **options):
                fake.options_given = options
                return self

            def remote(self, *args):
                fake.submitted.append(args)
                return len(fake.submitted) - 1

        return Task()

    def wait(self, pending, num_returns):
        return pending[:1], pending[1:]

    def get(self, ref):
        return {"task": ref}

    def cancel(self, ref, force):
        pass


def test_each_cell_task_gets_its_own_games_checkpoint_and_its_threads(monkeypatch):
    from dqn2snn_plugin.adapters import ray as ray_adapter
    from dqn2snn_plugin.experiments.grid import Cell, Game, Setting
    from dqn2snn_plugin.experiments.settings import RunSettings

    fake = _FakeRay([(True, 4.0)])
    monkeypatch.setattr(ray_adapter, "_import_ray", lambda local=False: fake)
    monkeypatch.delenv(KILL_ONCE_ENV, raising=False)
    pong, breakout = Game("pong-weights", "p", ("pong.pt",)), Game("breakout-weights", "b", ("breakout.pt",))
    two, eight = Setting("rate", 2, 99.9), Setting("binary", 8, 99.99, True)
    cells = [Cell(pong, two), Cell(breakout, two), Cell(pong, eight)]
    settings = RunSettings(episodes=1)
    records = list(ray_adapter.RayRunner(cpus_per_cell=2.6)(cells, settings))
    assert records == [{"task": 0}, {"task": 1}, {"task": 2}]
    assert fake.stored == ["pong-weights", "breakout-weights"]  # each game's weights put once
    assert fake.submitted == [("ref-pong-weights", two, settings, "cpu", 3, None),  # 2.6 CPUs: 3 threads
                              ("ref-breakout-weights", two, settings, "cpu", 3, None),
                              ("ref-pong-weights", eight, settings, "cpu", 3, None)]
    assert fake.options_given == {"num_cpus": 2.6, "num_gpus": 0.0, "max_retries": 3, "retry_exceptions": False}
    fake.submitted.clear()
    list(ray_adapter.RayRunner(cpus_per_cell=0.4)(cells[:1], settings))
    assert fake.submitted[0][4] == 1  # at least one thread


def test_a_cell_fits_a_live_node_with_exactly_its_cpus_and_dead_nodes_are_not_counted():
    from dqn2snn_plugin.adapters import ray as ray_adapter
    from dqn2snn_plugin.errors import ClusterError

    fake = _FakeRay([(True, 2.0), (False, 8.0), (True, 1.0)])
    ray_adapter.RayRunner(cpus_per_cell=2.0)._check_fits(fake)
    with pytest.raises(ClusterError, match="no node of the Ray cluster can hold a cell"):
        ray_adapter.RayRunner(cpus_per_cell=3.0)._check_fits(fake)  # only the dead node has 3
    assert ray_adapter._describe(fake, "10.0.0.1:6379") == "Ray at 10.0.0.1:6379: 2 node(s), 6 CPUs, 1 GPUs"
