"""The port every worker backend implements, and the environment every worker gets."""

from __future__ import annotations

from abc import ABC, abstractmethod

from cairn.auth.sealing import load_platform_key
from cairn.settings import CairnSettings

from services.autoscaler.pools import WorkerPool


class WorkerBackend(ABC):
    """Runs a pool's replicas somewhere.

    Drain semantics, shared by every adapter: scaling down sends the newest workers SIGTERM and
    stops counting them at once. A worker then finishes its in-flight job and commits (the
    service's graceful stop), or, killed after `drain_timeout_s`, leaves the offset uncommitted so
    the job is redelivered to another member and the trainer's idempotent handler picks it up.
    """

    @abstractmethod
    async def current(self, pool: WorkerPool) -> int:
        """Replicas running and not draining."""

    @abstractmethod
    async def scale(self, pool: WorkerPool, replicas: int) -> int:
        """Start or drain workers until `replicas` run; returns the count now running."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most adapters have nothing to do
        """Release what the backend holds when the autoscaler stops."""


def worker_env(settings: CairnSettings, pool: WorkerPool) -> dict[str, str]:
    """The CAIRN_* settings a worker needs to join the same platform, plus the pool's extras.

    The platform key travels as a value (like the S3 secret), so a container worker needs no
    secret mounted to sign with the same credentials as the service it scales.
    """
    env = {
        "CAIRN_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CAIRN_STORE_URL": settings.resolved_store_url(),
        "CAIRN_HOME": str(settings.home),
        # Workers serve their control-plane API too; a free port each, never a clash.
        "CAIRN_HTTP_PORT": "0",
        "CAIRN_BUS_SESSION_TIMEOUT_MS": str(settings.bus_session_timeout_ms),
        "CAIRN_BUS_HEARTBEAT_INTERVAL_MS": str(settings.bus_heartbeat_interval_ms),
        "CAIRN_OTEL_EXPORTER": settings.otel_exporter,
        "CAIRN_WORKER_POOL": pool.name,
        # Workers sign their events with the service credential the platform key derives.
        "CAIRN_AUTH_ENABLED": str(settings.auth_enabled).lower(),
        "CAIRN_PLATFORM_KEY": load_platform_key(settings).decode(),
    }
    if settings.s3_endpoint:
        env["CAIRN_S3_ENDPOINT"] = settings.s3_endpoint
    if settings.s3_access_key:
        env["CAIRN_S3_ACCESS_KEY"] = settings.s3_access_key
    if settings.s3_secret_key is not None:
        env["CAIRN_S3_SECRET_KEY"] = settings.s3_secret_key.get_secret_value()
    if settings.otel_endpoint:
        env["CAIRN_OTEL_ENDPOINT"] = settings.otel_endpoint
    env.update(pool.env)
    return env
