"""Where worker replicas run: local processes, Docker containers (Kubernetes is KEDA's job)."""

from __future__ import annotations

import logging

from cairn.errors import Unavailable
from cairn.settings import CairnSettings

from services.autoscaler.backends.base import WorkerBackend, worker_env
from services.autoscaler.backends.docker import DockerBackend, connect_docker
from services.autoscaler.backends.local import LocalProcessBackend
from services.autoscaler.backends.report_only import ReportOnlyBackend
from services.autoscaler.config import AutoscalerSettings

log = logging.getLogger("cairn.autoscaler")


def build_backend(settings: CairnSettings, config: AutoscalerSettings) -> WorkerBackend:
    """The backend the settings name; `docker` fails fast when no engine answers."""
    if config.backend == "none":
        return ReportOnlyBackend()
    if config.backend in ("docker", "auto"):
        try:
            client = connect_docker()
        except Unavailable:
            if config.backend == "docker":
                raise
            log.info("no Docker engine answers; running workers as local processes")
        else:
            return DockerBackend(
                client,
                settings,
                image=config.docker_image,
                network=config.docker_network,
                project=config.compose_project,
                drain_timeout_s=config.drain_timeout_s,
            )
    return LocalProcessBackend(settings, drain_timeout_s=config.drain_timeout_s)


__all__ = [
    "DockerBackend",
    "LocalProcessBackend",
    "ReportOnlyBackend",
    "WorkerBackend",
    "build_backend",
    "worker_env",
]
