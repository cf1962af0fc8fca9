"""Benchmark cells as Ray tasks: on a local Ray, or on a running cluster (`ray start --head`).

The driver (this process) loads each checkpoint and puts it into Ray's object store once; each cell
is one task that takes its checkpoint by reference, runs `grid.measure_cell` with the cell's CPUs
(and GPUs, for `device="cuda"`) and returns the record, stamped with its Ray node id. The driver
takes records with `ray.wait` as they finish and is the only writer (`grid.Grid.run`), so a task
that Ray reruns after its worker died (`max_retries`) still gives one record. Nothing Ray-specific
enters the numbers: with the same seeds and threads a cell gives the same numbers with and without Ray.

`connected` joins or starts Ray for a block. A local Ray binds to 127.0.0.1 only and gets this
machine's CPUs, whatever other Ray runs here (`ray.init(address="local")`). Before joining an address,
a gRPC probe of a few seconds checks that something answers there, so a dead or wrong address is one
ClusterError at once (`ray.init` retries for minutes). A head bound to this machine's loopback
(127.0.0.1:PORT) is joined there, not at the machine's network address Ray would put in its place.
Ray 2.60's `ray start --head` turns token authentication on when it finds a token: the driver does
the same with the token Ray's own loader finds ($RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH,
~/.ray/auth_token), and a head that refuses the driver is one line saying where the token goes.

`ray` comes with the extra `[ray]`: pip install "dqn2snn-plugin[ray]".
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import ModuleType

from dqn2snn_plugin.errors import ClusterError, ConfigError, Dqn2SnnError
from dqn2snn_plugin.checkpoint import DQNCheckpoint
from dqn2snn_plugin.experiments.evaluation import resolve_device
from dqn2snn_plugin.experiments.grid import Cell, Setting, measure_cell
from dqn2snn_plugin.experiments.settings import RunSettings

LOCAL = "local"  # start a Ray on this machine for the run
AUTO = "auto"  # join the cluster that `ray start` began on this machine (or $RAY_ADDRESS)
PROBE_SECONDS = 3.0  # how long an address may take to answer before it counts as dead
KILL_ONCE_ENV = "DQN2SNN_RAY_KILL_ONCE"  # fault injection (tests): a file path; the first task to create it kills its worker


def _is_loopback(address: str) -> bool:
    return address.rpartition(":")[0] in ("127.0.0.1", "localhost", "::1", "[::1]")


def _import_ray(local: bool = False) -> ModuleType:
    """`ray`, or a ClusterError naming the extra. A local Ray (or a head on loopback) stays on loopback:
    Ray reads that choice (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: 127.0.0.1) when it is first imported."""
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError('--ray needs the ray package: pip install "dqn2snn-plugin[ray]"') from None
    return ray


def probe(address: str, seconds: float = PROBE_SECONDS) -> None:
    """ClusterError unless a gRPC server (a Ray head's GCS) answers at HOST:PORT within `seconds`, and
    unless that head uses token authentication while no token is here (`_use_token_if_found`)."""
    import grpc

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray {address}: expected HOST:PORT of a Ray head node (e.g. 127.0.0.1:6379), or auto")
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=seconds)
    except grpc.FutureTimeoutError:
        raise ClusterError(f"--ray {address}: no Ray head answers there within {seconds:g} s: start one with "
                           "`ray start --head` and pass the address it prints") from None
    finally:
        channel.close()
    _import_ray(local=_is_loopback(address))
    if not _use_token_if_found() and _refuses_without_token(address, seconds):
        raise ClusterError(f"--ray {address}: the Ray head there uses token authentication and no token is here: "
                           "copy the head's token (`ray get-auth-token` on the head) into ~/.ray/auth_token or "
                           "$RAY_AUTH_TOKEN")


def _auto_address() -> str:
    """The address `auto` means ($RAY_ADDRESS, or the cluster `ray start` recorded on this machine)."""
    from ray._private.services import get_ray_address_from_environment

    try:
        address = get_ray_address_from_environment(AUTO, None)
    except ConnectionError as exc:  # several clusters run here, or none
        raise ClusterError(f"--ray auto: no single Ray cluster to join here (Ray: {str(exc).split('.')[0]}): start "
                           "one with `ray start --head`, or pass --ray HOST:PORT") from None
    if address in (None, AUTO, LOCAL):
        raise ClusterError("--ray auto: no running Ray cluster on this machine: start one with `ray start --head`, "
                           "or pass --ray HOST:PORT")
    return address


@contextmanager
def connected(address: str = LOCAL) -> Iterator[str]:
    """Ray for the block; yields a one-line description of the cluster.

    `address`: "local" starts a Ray on this machine (all its CPUs, no dashboard) and stops it after;
    "auto" or HOST:PORT joins a running cluster and leaves it running. In a process already connected
    to Ray (`ray.init` done by the caller) that connection is used and kept, when it is the one named.
    """
    ray = _import_ray(local=address == LOCAL or _is_loopback(address))
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (LOCAL, AUTO):
            probe(address)
            if address != current:
                raise ClusterError(f"--ray {address}: this process is already connected to the Ray at {current}")
        yield _describe(ray, current)
        return
    if address == LOCAL:  # "local": a new Ray, even where a cluster file of another run lies in Ray's temp folder
        ray.init(address=LOCAL, num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False)
    else:
        target = _auto_address() if address == AUTO else address
        probe(target)
        try:
            ray.init(address=target, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.AuthenticationError) as exc:
            raise ClusterError(f"--ray {address}: cannot join the Ray cluster ({str(exc).splitlines()[0]})") from None
    try:
        yield _describe(ray, ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _use_token_if_found() -> bool:
    """Token authentication on for this driver when RAY_AUTH_MODE is unset and Ray's own token loader
    finds a token, as `ray start --head` decides for the head (Ray 2.60 does not do it for a driver
    joining an address, which the head then refuses with InvalidAuthToken). Whether it is on."""
    from ray._private.authentication import authentication_token_setup as auth

    if os.environ.get(auth.AUTH_MODE_ENV_VAR) is None and \
            auth.AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        auth._enable_token_auth()
    return os.environ.get(auth.AUTH_MODE_ENV_VAR, "").lower() == "token"


def _refuses_without_token(address: str, seconds: float = PROBE_SECONDS) -> bool:
    """Whether the head's GCS answers a call without a token with UNAUTHENTICATED (ray.init would
    retry it for a minute, logging each try)."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        try:
            channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(b"", timeout=seconds)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def _describe(ray: ModuleType, address: str) -> str:
    total = ray.cluster_resources()
    return (f"Ray at {address}: {len(_alive_nodes(ray))} node(s), {total.get('CPU', 0):g} CPUs, "
            f"{total.get('GPU', 0):g} GPUs")


def _alive_nodes(ray: ModuleType) -> list[dict]:
    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


def _first_to_create(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _cell_task(checkpoint: DQNCheckpoint, setting: Setting, settings: RunSettings, device: str, threads: int,
               kill_once: str | None) -> dict:
    """One cell inside a Ray worker: the network on `device`, `threads` torch threads, then `measure_cell`;
    its JSON record, stamped with the Ray node."""
    import ray
    import torch

    if kill_once and _first_to_create(kill_once):
        os._exit(1)  # the injected fault: this worker dies mid-cell, as a lost node would
    torch.set_num_threads(threads)
    checkpoint = replace(checkpoint, q_network=checkpoint.q_network.to(resolve_device(device)))
    record = measure_cell(checkpoint, setting, settings)
    return replace(record, ray_node_id=ray.get_runtime_context().get_node_id()).to_json()


@dataclass(frozen=True)
class RayRunner:
    """A `grid.Runner` on Ray: one task per cell asking for these resources.

    cpus_per_cell: CPUs Ray reserves per cell (also its torch threads, rounded, at least 1).
    gpus_per_cell: GPUs reserved per cell (fractions share a GPU); needs device="cuda".
    device: where each cell's networks run, on its worker ("cpu" or "cuda").
    max_retries: reruns of a cell whose worker or node died before it finished.
    """

    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    device: str = "cpu"
    max_retries: int = 3

    def check(self) -> RayRunner:
        """ConfigError for resources that are not finite numbers or cannot fit the device asked for; return self."""
        finite = math.isfinite(self.cpus_per_cell) and math.isfinite(self.gpus_per_cell)
        if not finite or self.cpus_per_cell <= 0 or self.gpus_per_cell < 0:
            raise ConfigError(f"--cpus-per-cell must be > 0 and --gpus-per-cell >= 0, got {self.cpus_per_cell} "
                              f"and {self.gpus_per_cell}")
        if (self.device == "cuda") != (self.gpus_per_cell > 0):
            raise ConfigError("on Ray, --device cuda and --gpus-per-cell > 0 go together (Ray hides the GPUs from "
                              "cells that reserve none): pass both or neither")
        return self

    def _check_fits(self, ray: ModuleType) -> None:
        nodes = _alive_nodes(ray)
        if not any(n.get("CPU", 0) >= self.cpus_per_cell and n.get("GPU", 0) >= self.gpus_per_cell for n in nodes):
            raise ClusterError(f"no node of the Ray cluster can hold a cell ({self.cpus_per_cell:g} CPU and "
                               f"{self.gpus_per_cell:g} GPU each): lower --cpus-per-cell / --gpus-per-cell or add nodes")

    def __call__(self, cells: Sequence[Cell], settings: RunSettings) -> Iterator[dict]:
        """Check that a cell fits a node, submit every cell at once, return their records as they finish."""
        if not cells:
            return iter(())
        ray = _import_ray()
        self._check_fits(ray)
        task = ray.remote(_cell_task).options(num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell,
                                              max_retries=self.max_retries, retry_exceptions=False)
        shipped = {}
        for cell in cells:
            if cell.game.digest not in shipped:
                shipped[cell.game.digest] = ray.put(cell.game.checkpoint)
        threads, kill_once = max(1, round(self.cpus_per_cell)), os.environ.get(KILL_ONCE_ENV)
        pending = [task.remote(shipped[c.game.digest], c.setting, settings, self.device, threads, kill_once)
                   for c in cells]
        return self._collect(ray, pending)

    def _collect(self, ray: ModuleType, pending: list) -> Iterator[dict]:
        try:
            while pending:
                (done,), pending = ray.wait(pending, num_returns=1)
                yield self._result(ray, done)
        finally:
            for ref in pending:  # the driver stopped early (an error, Ctrl-C): nobody would take these
                ray.cancel(ref, force=True)

    def _result(self, ray: ModuleType, ref: object) -> dict:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, Dqn2SnnError):
                raise exc.cause from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as exc:
            raise ClusterError(f"a cell's worker died and Ray gave up after {self.max_retries} retries "
                               f"({type(exc).__name__}): see the Ray logs (/tmp/ray/session_latest/logs)") from None
