"""Packages served by their own image (SageMaker's hosting contract), through the Docker SDK.

A script package whose manifest names an `image` (a training job's `image`) is served by that
image: on the first request the gateway runs `IMAGE serve` with the package's files at
/opt/ml/model, waits for `GET /ping` to answer 200, then sends each request as
`POST /invocations` with its Content-Type and Accept. The lifecycle (one request at a time, the
timeout that kills and restarts, the restart after a death) is `ServedModel`'s.

Where the gateway runs beside the engine, the files are bind-mounted read-only and the container
is reached at a port published on 127.0.0.1. Where it runs in a container of its own (compose,
the engine's socket mounted, `CAIRN_GATEWAY_CONTAINER_NETWORK` set), the engine cannot see the
gateway's files: they are copied into the model's container, which joins that network and is
reached at its address there on port 8080. Containers carry the labels `cairn.gateway` (this
gateway: host name and process index) and `cairn.model` (the package); a gateway removes its
own label's leftovers the first time it reaches the engine, and its containers when it stops.

No engine reachable (no `docker` package, nothing answering): the request gets 503
ServiceUnavailable with the reason, the gateway stays healthy, and a later request tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
from cairn.artifacts import LoadedModel, ModelManifest, download_package
from cairn.errors import Unavailable
from cairn.store.base import ObjectStore

from services.gateway.served_models import ModelServerError, Reply, ServedModel

log = logging.getLogger("cairn.gateway")

PORT = 8080
MODEL_DIR = "/opt/ml/model"
LABEL_GATEWAY = "cairn.gateway"
LABEL_MODEL = "cairn.model"
_PING_TIMEOUT_S = 2.0
_LOG_LINES = 20
_CLOSING: set[asyncio.Task[None]] = set()  # clients closing after their model was closed


class ContainerModelError(ModelServerError):
    """The model's container failed, hung, exited or could not be started."""

    code = "container_model_error"


class ContainerEngineUnreachable(Unavailable):
    """No container engine answers: the platform's problem, not the model's (503)."""

    code = "container_engine_unreachable"


class ContainerEngine:
    """The Docker engine this gateway starts model containers on, connected on first use."""

    def __init__(self, url: str | None, instance: str) -> None:
        self.url = url
        self.instance = instance
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_GATEWAY: self.instance}

    def client(self) -> Any:
        """A connected client; the first connection removes this gateway's leftover containers."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
                self._sweep(self._client)
            return self._client

    def forget(self) -> None:
        """The engine stopped answering: connect again next time."""
        with self._lock:
            self._client = None

    def _connect(self) -> Any:
        where = self.url or "DOCKER_HOST or the local socket"
        try:
            import docker  # the `docker` extra
        except ImportError:
            raise ContainerEngineUnreachable(
                "no container engine is reachable: the `docker` Python package is not installed "
                "(pip install 'cairn[docker]')"
            ) from None
        try:
            client = docker.DockerClient(base_url=self.url) if self.url else docker.from_env()
            client.ping()
        except Exception as error:  # DockerException, requests' errors: all mean "not there"
            raise ContainerEngineUnreachable(
                f"no container engine is reachable at {where}: {error}", engine=where
            ) from None
        return client

    def _sweep(self, client: Any) -> None:
        stale = client.containers.list(
            all=True, filters={"label": f"{LABEL_GATEWAY}={self.instance}"}
        )
        for container in stale:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        if stale:
            log.info("removed %d model container(s) a previous run left", len(stale))


class ContainerModel(ServedModel):
    """A package served by `IMAGE serve`; no container runs until the first request."""

    failure = ContainerModelError
    server_name = "container"
    poll_s = 0.05
    lost = (httpx.TransportError,)  # refused, reset or closed: the container is gone

    def __init__(
        self,
        manifest: ModelManifest,
        uri: str,
        root: Path,
        engine: ContainerEngine,
        *,
        network: str | None,
        start_timeout_s: float,
        timeout_s: float,
    ) -> None:
        super().__init__(manifest, start_timeout_s=start_timeout_s, timeout_s=timeout_s)
        self.image = str(manifest.details["image"])
        self.uri = uri
        self.root = root
        self.model_dir = root / "model"
        self.engine = engine
        self.network = network
        self.container: Any = None
        self.base_url: str | None = None
        self.last_logs = ""
        self._http: httpx.AsyncClient | None = None

    def environment(self) -> dict[str, str]:
        """The package's own environment (manifest details), never the gateway's."""
        env = self.manifest.details.get("environment")
        return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}

    def running(self) -> bool:
        return self.container is not None

    async def launch(self) -> None:
        self.container, self.base_url = await asyncio.to_thread(self._run)
        self._http = httpx.AsyncClient(timeout=None)

    def _run(self) -> tuple[Any, str]:
        client = self.engine.client()  # the `docker` package is there once this answers
        import docker.errors
        import requests

        options: dict[str, Any] = {
            "environment": self.environment(),
            "labels": {**self.engine.labels, LABEL_MODEL: self.uri},
        }
        if self.network:
            options["network"] = self.network
        else:
            options["ports"] = {f"{PORT}/tcp": ("127.0.0.1", None)}
            options["volumes"] = {str(self.model_dir): {"bind": MODEL_DIR, "mode": "ro"}}
        try:
            try:
                container = client.containers.create(self.image, ["serve"], **options)
            except docker.errors.ImageNotFound:
                log.info("pulling %s for %s", self.image, self.uri)
                client.images.pull(self.image)
                container = client.containers.create(self.image, ["serve"], **options)
            try:
                if self.network:
                    with self._model_archive().open("rb") as archive:
                        container.put_archive("/", archive)
                container.start()
                container.reload()
            except BaseException:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
                raise
        except docker.errors.APIError as error:
            raise ContainerModelError(
                f"the engine could not start {self.image}: {error.explanation or error}",
                image=self.image,
            ) from None
        except (docker.errors.DockerException, requests.ConnectionError) as error:
            self.engine.forget()
            raise ContainerEngineUnreachable(
                f"the container engine stopped answering: {error}"
            ) from None
        return container, f"http://{self._address(container)}"

    def _address(self, container: Any) -> str:
        settings = container.attrs["NetworkSettings"]
        if self.network:
            return f"{settings['Networks'][self.network]['IPAddress']}:{PORT}"
        return f"127.0.0.1:{settings['Ports'][f'{PORT}/tcp'][0]['HostPort']}"

    def _model_archive(self) -> Path:
        """The package's files under opt/ml/model in read-only modes, for an engine that cannot
        see them (put_archive extracts at /); written once, streamed to every new container."""
        path = self.root / "model.tar"
        if path.is_file():
            return path

        def read_only(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.mode = 0o555 if info.isdir() else 0o444
            return info

        with tarfile.open(path.with_suffix(".partial"), mode="w") as archive:
            for name in ("opt", "opt/ml"):
                folder = tarfile.TarInfo(name)
                folder.type, folder.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(folder)
            archive.add(self.model_dir, arcname=MODEL_DIR.lstrip("/"), filter=read_only)
        path.with_suffix(".partial").replace(path)
        return path

    async def answers(self) -> bool:
        assert self._http is not None
        try:
            ping = await self._http.get(f"{self.base_url}/ping", timeout=_PING_TIMEOUT_S)
        except httpx.TransportError:
            return False
        return ping.status_code == 200

    async def exit_code(self) -> int | None:
        return await asyncio.to_thread(self._exit_code, 0.0)

    def _exit_code(self, wait_s: float) -> int | None:
        """The exit code once the engine says the container stopped (waiting up to `wait_s`)."""
        if self.container is None:
            return None
        try:
            if wait_s:
                with contextlib.suppress(Exception):  # still running after wait_s
                    self.container.wait(timeout=wait_s)
            self.container.reload()
            if self.container.status not in ("exited", "dead"):
                return None
            self.last_logs = self.container.logs(tail=_LOG_LINES).decode(errors="replace")
            return int(self.container.attrs["State"]["ExitCode"])
        except Exception:  # removed behind the gateway's back, or the engine went away
            return -1

    async def exchange(self, body: bytes, content_type: str, accept: str | None) -> Reply:
        assert self._http is not None
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        try:
            response = await self._http.post(
                f"{self.base_url}/invocations", content=body, headers=headers
            )
        except httpx.TransportError:
            await asyncio.to_thread(self._exit_code, 3.0)  # let the engine notice the exit
            raise
        out_type = response.headers.get("content-type", accept or "application/json")
        error = "" if response.status_code == 200 else response.text[:2000]
        return Reply(response.status_code, response.content, out_type, error)

    async def stop(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        await asyncio.to_thread(self._remove)

    def _remove(self) -> None:
        container, self.container, self.base_url = self.container, None, None
        if container is not None:
            with contextlib.suppress(Exception):  # already gone, or the engine with it
                container.remove(force=True)

    def exited_message(self, code: int) -> str:
        tail = self.last_logs.strip()
        return f"the container of {self.image} exited with code {code} before answering /ping" + (
            f"; its last output:\n{tail}" if tail else ""
        )

    def slow_start_message(self) -> str:
        return (
            f"the container of {self.image} did not answer GET /ping with 200 within "
            f"{self.start_timeout_s:g} s"
        )

    def describe(self) -> str:
        short = self.container.short_id if self.container is not None else None
        return f"container {short} of {self.image} ({self.uri})"

    def close(self) -> None:
        """Remove the container and the package's files."""
        super().close()
        http, self._http = self._http, None
        if http is not None:
            with contextlib.suppress(RuntimeError):  # no loop here: the pool goes with it
                closing = asyncio.get_running_loop().create_task(http.aclose())
                _CLOSING.add(closing)
                closing.add_done_callback(_CLOSING.discard)
        self._remove()
        shutil.rmtree(self.root, ignore_errors=True)


class ContainerModels:
    """The gateway's container models: loaded into a temp dir, their containers on the engine."""

    def __init__(
        self,
        *,
        engine_url: str | None,
        network: str | None,
        instance: str,
        start_timeout_s: float,
        timeout_s: float,
    ) -> None:
        self.engine = ContainerEngine(engine_url, instance)
        self.network = network
        self.start_timeout_s = start_timeout_s
        self.timeout_s = timeout_s
        self.models: set[ContainerModel] = set()

    def load(self, store: ObjectStore, uri: str) -> ContainerModel:
        """Download the package; its container starts with the first request."""
        root = Path(tempfile.mkdtemp(prefix="cairn-container-"))
        try:
            manifest = download_package(store, uri, root / "model")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        with contextlib.suppress(ContainerEngineUnreachable):
            self.engine.client()  # connected early: leftovers of a crashed run go now
        model = ContainerModel(
            manifest,
            uri,
            root,
            self.engine,
            network=self.network,
            start_timeout_s=self.start_timeout_s,
            timeout_s=self.timeout_s,
        )
        self.models.add(model)
        return model

    def evicted(self, model: LoadedModel) -> None:
        """Remove an evicted model's container off the event loop (the engine's API blocks)."""
        if isinstance(model, ContainerModel):
            self.models.discard(model)
            threading.Thread(target=model.close, name="cairn-container-remove").start()

    def close(self) -> None:
        for model in list(self.models):
            self.models.discard(model)
            model.close()
