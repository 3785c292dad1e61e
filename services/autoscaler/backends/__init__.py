"""Where worker replicas run: local processes, Docker containers (Kubernetes is KEDA's job)."""

from services.autoscaler.backends.base import WorkerBackend, worker_env
from services.autoscaler.backends.docker import DockerBackend
from services.autoscaler.backends.local import LocalProcessBackend

__all__ = ["DockerBackend", "LocalProcessBackend", "WorkerBackend", "worker_env"]
