"""Instances of a variant are gateway processes: how many run, cold starts, the shared port.

On one machine (`cairn up`) the gateway is a pool of processes that all listen on its port with
SO_REUSEPORT: the kernel spreads connections over them, every process serves every endpoint
(each loads the models deployed), and each reports its own traffic. The primary process (the one
`cairn up` starts, process 0) sizes the pool from the instance counts of the endpoints it
applies:

    processes = clamp(max(instance_count of every variant), 1, max_processes)

The maximum, not the sum: a process is not dedicated to a variant (connections are spread before
the request is read), so N processes give every variant the capacity of N instances; summing
would start processes that contend for the same cores and load every model once more each.
`max_processes` defaults to the machine's cores; the primary always runs, so there is always a
process to take the first request of a scaled-to-zero endpoint. With Compose or Kubernetes the
same count is the gateway's replicas (docs/serving.md).

A variant at 0 instances (a scaling policy with min_capacity 0) has no model loaded; its
endpoint waits in `RoutingTable.cold` and the first invocation loads it, then is answered
(SageMaker Serverless Inference's cold start). The time is `cairn_gateway_cold_start_seconds`
and an `EndpointColdStarted` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.contracts.events import EndpointUpdated
from cairn.contracts.scaling_events import EndpointColdStarted
from cairn.errors import Unavailable
from prometheus_client import Histogram

if TYPE_CHECKING:
    from services.gateway.runtime import RoutingTable

log = logging.getLogger("cairn.gateway")

COLD_START_SECONDS = Histogram(
    "cairn_gateway_cold_start_seconds",
    "Time for a request to load a scaled-to-zero endpoint's models before it is answered.",
    ["endpoint"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
RECONCILE_S = 0.5


class ScaledToZero(Unavailable):
    """The endpoint has a variant at 0 instances: an invocation cold-starts it (never sent: the
    invocation path catches it; another protocol answers 503 while nothing is loaded)."""

    code = "scaled_to_zero"

    def __init__(self, endpoint_name: str) -> None:
        super().__init__(
            f"endpoint {endpoint_name!r} is scaled to zero: InvokeEndpoint starts it",
            endpoint=endpoint_name,
        )
        self.endpoint_name = endpoint_name


@dataclass(frozen=True)
class ColdStart:
    update: EndpointUpdated
    variants: list[str]
    seconds: float


def cold_variants(update: EndpointUpdated) -> list[str]:
    """The production variants at 0 instances (nothing of the endpoint loads until invoked)."""
    return [v.variant_name for v in update.production_variants if v.instance_count == 0]


def cold_view(update: EndpointUpdated) -> dict[str, Any]:
    """`GET /endpoints` of a scaled-to-zero endpoint: its desired state, nothing loaded."""
    return {
        **update.model_dump(mode="json", include={"endpoint_name", "revision", "status"}),
        "production_variants": [v.model_dump(mode="json") for v in update.production_variants],
        "shadow_variant": (
            update.shadow_variant.model_dump(mode="json") if update.shadow_variant else None
        ),
        "scaled_to_zero": cold_variants(update),
    }


def pool_size(instance_counts: Iterable[int], max_processes: int) -> int:
    """Gateway processes on this machine for these variants' desired instance counts."""
    return max(1, min(max(instance_counts, default=1), max_processes))


def max_processes(configured: int, cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The configured cap, else the cores this process may use: its CPU affinity, within its
    cgroup's quota (a container's `cpus:` or a pod's CPU limit), at least 1."""
    if configured > 0:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores or 1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity stands
    return max(1, cores or 1)


def shared_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) socket that every gateway process of the pool can bind too.

    uvicorn listens once the lifespan has loaded the endpoints, so the kernel sends a process
    no connection before it can answer.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets whose
    # protocol says TCP; with 0 every answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


class ColdStartReporter:
    """Publishes `EndpointColdStarted` off the request path (the request is answered first)."""

    def __init__(self, publish: Callable[[Any], Awaitable[Any]], process: int) -> None:
        self.publish = publish
        self.process = process
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, started: ColdStart) -> None:
        task = asyncio.get_running_loop().create_task(self._send(started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, started: ColdStart) -> None:
        event = EndpointColdStarted(
            endpoint_name=started.update.endpoint_name,
            variants=started.variants,
            revision=started.update.revision,
            cold_start_s=round(started.seconds, 6),
            process=self.process,
        )
        try:
            await self.publish(event)
        except Exception:
            log.exception("could not report the cold start of %s", event.endpoint_name)


class GatewayProcesses:
    """The primary's children: `pool_size - 1` more gateway processes on the same port.

    Children run `python -m services.gateway` with `CAIRN_GATEWAY_PROCESS_INDEX` set (they never
    start processes of their own), share the primary's process group (the supervisor's stop
    reaches them) and its log. One that exits is started again on the next round.
    """

    def __init__(
        self,
        desired: Callable[[], int],
        *,
        port: int,
        role: str,
        command: list[str] | None = None,
    ) -> None:
        self.desired = desired
        self.port = port
        self.role = "serve" if role == "all" else role  # async consumers: the primary's only
        self.command = command or [sys.executable, "-m", "services.gateway"]
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping: list[subprocess.Popen[bytes]] = []

    def reconcile(self) -> None:
        """Start or stop children until the pool has `desired()` processes."""
        self.stopping = [child for child in self.stopping if child.poll() is None]
        for index, child in list(self.children.items()):
            if child.poll() is not None:
                log.warning("gateway process %d exited with %s", index, child.returncode)
                del self.children[index]
        wanted = self.desired() - 1
        for index in range(1, wanted + 1):
            if index not in self.children:
                self.children[index] = self._start(index)
        for index in sorted(self.children, reverse=True):
            if index > wanted:
                log.info("stopping gateway process %d (pool of %d)", index, wanted + 1)
                child = self.children.pop(index)
                child.send_signal(signal.SIGTERM)  # uvicorn finishes its requests, then exits
                self.stopping.append(child)

    def _start(self, index: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "CAIRN_HTTP_PORT": str(self.port),
            "CAIRN_GATEWAY_PROCESS_INDEX": str(index),
            "CAIRN_GATEWAY_ROLE": self.role,
        }
        log.info("starting gateway process %d on port %d", index, self.port)
        return subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL)

    async def run(self) -> None:
        """Follow the desired pool size until cancelled, then stop every child."""
        try:
            while True:
                self.reconcile()
                await asyncio.sleep(RECONCILE_S)
        finally:
            await asyncio.to_thread(self.stop)

    def stop(self, timeout_s: float = 20.0) -> None:
        children = [*self.children.values(), *self.stopping]
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()
        self.stopping.clear()


def instance_counts(table: RoutingTable) -> list[int]:
    """The desired instance count of every production variant the process knows."""
    return [
        *(v.state.instance_count for e in table.endpoints.values() for v in e.production),
        *(v.instance_count for u in table.cold.values() for v in u.production_variants),
    ]


def serve() -> None:
    """`python -m services.gateway`: one process of the pool; the primary sizes the pool."""
    from services.gateway.app import create_service, freeze_startup_heap
    from services.gateway.config import GatewaySettings

    config = GatewaySettings()
    service = create_service(config=config)
    freeze_startup_heap(service)  # this process only: see its docstring
    if config.role == "worker":  # an async worker of the autoscaled pool: a port of its own
        service.run()
        return
    sock = shared_socket(service.settings.http_host, service.settings.http_port)
    if config.process_index == 0:
        table = service.api.state.gateway.table
        cap = max_processes(config.max_processes)
        processes = GatewayProcesses(
            lambda: pool_size(instance_counts(table), cap),
            port=sock.getsockname()[1],
            role=config.role,
        )
        service.background("gateway-processes", processes.run)
    else:
        service.background("gateway-primary-watch", _stop_without_primary(os.getppid()))
    service.run(sockets=[sock])


def _stop_without_primary(primary: int) -> Callable[[], Coroutine[Any, Any, None]]:
    """A child whose primary died (killed: it could not stop its children) stops too, so the
    restarted primary's pool is the only one on the port."""

    async def watch() -> None:
        while True:
            if os.getppid() != primary:
                break
            await asyncio.sleep(1.0)
        log.warning("the primary gateway process %d is gone: stopping", primary)
        os.kill(os.getpid(), signal.SIGTERM)

    return watch
