"""Worker containers through the Docker SDK (compose deployments); GPU pools ask for GPUs.

Containers carry compose's project/service labels, so `docker compose ps` lists them next to the
platform's own, and a restarted autoscaler counts the workers it started before. Draining is
`container.stop(timeout=drain)`: SIGTERM, then SIGKILL when the drain timeout passes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from cairn.errors import Unavailable
from cairn.settings import CairnSettings

from services.autoscaler.backends.base import WorkerBackend, worker_env
from services.autoscaler.pools import WorkerPool

log = logging.getLogger("cairn.autoscaler")

POOL_LABEL = "cairn.pool"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"


def connect_docker() -> Any:
    """A Docker client that has answered a ping (Unavailable when no engine answers)."""
    try:
        import docker
    except ImportError as error:
        raise Unavailable("the Docker backend needs the `docker` extra") from error
    try:
        client = docker.from_env()
        client.ping()
    except Exception as error:
        raise Unavailable(f"no Docker engine answers: {error}") from error
    return client


def gpu_device_requests() -> list[Any]:
    """Every GPU of the host, as Docker's `--gpus all`."""
    from docker.types import DeviceRequest

    return [DeviceRequest(count=-1, capabilities=[["gpu"]])]


class DockerBackend(WorkerBackend):
    """One container per replica, from the platform image, on the compose network.

    Args:
        client: a `docker.DockerClient` (or any object with the same `containers` API).
        settings: the platform settings every worker inherits.
        image: the image to run when a pool names none.
        network: the compose network, so workers reach Kafka and MinIO by service name.
        project: the compose project the containers are labelled with.
        drain_timeout_s: seconds between SIGTERM and SIGKILL when draining.
    """

    def __init__(
        self,
        client: Any,
        settings: CairnSettings,
        *,
        image: str,
        network: str | None = None,
        project: str = "cairn",
        drain_timeout_s: float = 60.0,
    ) -> None:
        self.client = client
        self.settings = settings
        self.image = image
        self.network = network
        self.project = project
        self.drain_timeout_s = drain_timeout_s
        self._draining: set[str] = set()
        self._lock = threading.Lock()

    async def current(self, pool: WorkerPool) -> int:
        return len(await asyncio.to_thread(self._serving, pool))

    async def scale(self, pool: WorkerPool, replicas: int) -> int:
        serving = await asyncio.to_thread(self._serving, pool)
        for _ in range(replicas - len(serving)):
            await asyncio.to_thread(self._run, pool)
        if replicas < len(serving):
            newest_first = sorted(serving, key=_created, reverse=True)
            for container in newest_first[: len(serving) - replicas]:
                self._drain(pool, container)
        return len(await asyncio.to_thread(self._serving, pool))

    def _labels(self, pool: WorkerPool) -> dict[str, str]:
        return {
            POOL_LABEL: pool.name,
            COMPOSE_PROJECT_LABEL: self.project,
            COMPOSE_SERVICE_LABEL: f"pool-{pool.name}",
        }

    def _serving(self, pool: WorkerPool) -> list[Any]:
        containers = self.client.containers.list(
            filters={
                "label": [f"{POOL_LABEL}={pool.name}", f"{COMPOSE_PROJECT_LABEL}={self.project}"]
            }
        )
        with self._lock:
            return [
                c
                for c in containers
                if c.status in ("created", "running", "restarting") and c.id not in self._draining
            ]

    def _run(self, pool: WorkerPool) -> None:
        options: dict[str, Any] = {
            "command": ["python", "-m", pool.module, *pool.args],
            "detach": True,
            "environment": worker_env(self.settings, pool),
            "labels": self._labels(pool),
            "stop_signal": "SIGTERM",
            "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 5},
        }
        if self.network:
            options["network"] = self.network
        if pool.gpu:
            options["device_requests"] = gpu_device_requests()
        container = self.client.containers.run(pool.image or self.image, **options)
        log.info("pool %s: started container %s", pool.name, getattr(container, "short_id", "?"))

    def _drain(self, pool: WorkerPool, container: Any) -> None:
        """Stop in a thread of its own: a worker may take the whole drain timeout to finish."""
        with self._lock:
            self._draining.add(container.id)
        log.info("pool %s: draining container %s", pool.name, container.id[:12])

        def stop() -> None:
            try:
                container.stop(timeout=int(self.drain_timeout_s))
                container.remove()
            except Exception as error:
                log.warning("pool %s: stopping %s failed: %r", pool.name, container.id[:12], error)
            finally:
                with self._lock:
                    self._draining.discard(container.id)

        threading.Thread(target=stop, name=f"drain-{container.id[:12]}", daemon=True).start()


def _created(container: Any) -> str:
    return str(getattr(container, "attrs", {}).get("Created", ""))
