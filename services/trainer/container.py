"""Docker backend for bring-your-own images: the same /opt/ml contract, through the Docker SDK.

The `docker` package is optional; without it, or without an engine answering, the job fails
with a clear "no Docker engine reachable" reason instead of crashing the worker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from services.trainer.algorithms import TrainingContext
from services.trainer.domain import JobFailure

CONTAINER_ML = "/opt/ml"


def docker_client() -> Any:
    """A connected Docker client, or JobFailure saying why there is none."""
    try:
        import docker  # optional: not a dependency of Cairn
    except ImportError:
        raise JobFailure(
            "algorithm_error",
            "no Docker engine reachable: the `docker` Python package is not installed",
        ) from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as error:
        raise JobFailure("algorithm_error", f"no Docker engine reachable: {error}") from None
    return client


def run_container(
    image: str, ml: Path, env: dict[str, str], args: list[str], ctx: TrainingContext
) -> int:
    """Run `image train ARGS` with `ml` mounted at /opt/ml; returns the exit code."""
    client = docker_client()
    inside = {k: v.replace(str(ml), CONTAINER_ML) for k, v in env.items()}
    options: dict[str, Any] = {}
    if ctx.use_gpu:
        import docker.types

        options["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    container = client.containers.run(
        image,
        ["train", *args],
        environment=inside,
        volumes={str(ml): {"bind": CONTAINER_ML, "mode": "rw"}},
        detach=True,
        **options,
    )
    try:
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                break
            if ctx.should_stop():
                container.kill()
                break
            time.sleep(0.5)
        for line in container.logs().decode(errors="replace").splitlines():
            ctx.log(line)
        return int(container.wait().get("StatusCode", 1))
    finally:
        container.remove(force=True)
