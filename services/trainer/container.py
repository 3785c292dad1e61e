"""Docker backend for bring-your-own images: the same /opt/ml contract, through the Docker SDK.

The `docker` package is optional; without it, or without an engine answering, the job fails
with a clear "no Docker engine reachable" reason instead of crashing the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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
    image: str,
    ml: Path,
    env: dict[str, str],
    args: list[str],
    ctx: TrainingContext,
    on_line: Callable[[str], None] = lambda line: None,
) -> int:
    """Run `image train ARGS` with `ml` mounted at /opt/ml; returns the exit code.

    Its output is logged line by line while it runs, and each line goes to `on_line` (the job's
    metric definitions), as a script's does.
    """
    client = docker_client()
    import docker.errors
    import docker.types

    _ensure_image(client, image)
    inside = {k: v.replace(str(ml), CONTAINER_ML) for k, v in env.items()}
    options: dict[str, Any] = {}
    if ctx.use_gpu:
        options["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    try:
        container = client.containers.run(
            image,
            ["train", *args],
            environment=inside,
            volumes={str(ml): {"bind": CONTAINER_ML, "mode": "rw"}},
            detach=True,
            **options,
        )
    except docker.errors.APIError as error:
        raise JobFailure(
            "algorithm_error",
            f"the Docker engine could not start {image!r}: {error.explanation or error}",
        ) from None
    follower = threading.Thread(target=_follow, args=(container, ctx, on_line), daemon=True)
    follower.start()
    try:
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                break
            if ctx.should_stop():
                container.kill()
                break
            time.sleep(0.5)
        code = int(container.wait().get("StatusCode", 1))
        follower.join(timeout=10)  # the stream ends with the container
        return code
    finally:
        container.remove(force=True)


def _ensure_image(client: Any, image: str) -> None:
    """Pull an image the engine lacks; one it cannot get is the request's fault (a 4xx's)."""
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            client.images.pull(image)
        except docker.errors.APIError as error:
            raise JobFailure(
                "invalid_input",
                f"image {image!r} is not on the Docker engine and could not be pulled: "
                f"{error.explanation or error}",
            ) from None


def _follow(container: Any, ctx: TrainingContext, on_line: Callable[[str], None]) -> None:
    pending = b""
    for chunk in container.logs(stream=True, follow=True):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            _emit(line, ctx, on_line)
    if pending:
        _emit(pending, ctx, on_line)


def _emit(raw: bytes, ctx: TrainingContext, on_line: Callable[[str], None]) -> None:
    line = raw.decode(errors="replace").rstrip("\r")
    ctx.log(line)
    on_line(line)
