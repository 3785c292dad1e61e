"""Packages with their own inference code (framework `script`), served by a model server each.

User code never runs in the gateway's process: each script package gets a `model_server.py`
process (SageMaker's inference-toolkit contract), started on its first request, reached over a
Unix socket in a private temp directory, restarted on the next request once it died. A request
the user code fails on, or one it does not answer within `script_invocation_timeout_s` (the
server is then killed and started again at once), is a ModelError of that request only. The
lifecycle is `ServedModel`'s (served_models.py), shared with container models: a script package
whose manifest names an `image` is served by its container instead (container_models.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cairn.artifacts import (
    LoadedModel,
    ModelManifest,
    UnsupportedModelPackage,
    download_package,
    load_model,
    read_manifest,
)
from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore

from services.gateway.container_models import ContainerModels
from services.gateway.model_server import SCRIPT_FILES
from services.gateway.served_models import ModelServerError, Reply, ServedModel

log = logging.getLogger("cairn.gateway")

SERVER = Path(__file__).with_name("model_server.py")
# The gateway's own credentials stay out of user code's environment, and so does the pool's
# metrics folder (user code importing prometheus_client would write into it).
_PRIVATE_ENV = ("CAIRN_", "AWS_", "PROMETHEUS_MULTIPROC_DIR")


class ScriptModelError(ModelServerError):
    """The user's inference code failed, hung or died (SageMaker: the container's 500)."""

    code = "script_model_error"


class ScriptInputRefused(InvalidInput):
    """The handlers refused the input (a 4xx of their own)."""

    code = "script_input_refused"


class ScriptMediaTypeRefused(ScriptInputRefused):
    """The default input_fn cannot decode the content type (the toolkit's 415)."""

    http_status = 415


class ScriptAcceptRefused(ScriptInputRefused):
    """The default output_fn cannot encode the accepted type (the toolkit's 406)."""

    http_status = 406


_REFUSALS: dict[int, type[ScriptInputRefused]] = {
    415: ScriptMediaTypeRefused,
    406: ScriptAcceptRefused,
}


class ScriptModel(ServedModel):
    """A script package on disk and its model-server process (none until the first request)."""

    failure = ScriptModelError
    refusals = _REFUSALS
    refused = ScriptInputRefused

    def __init__(
        self, manifest: ModelManifest, root: Path, *, start_timeout_s: float, timeout_s: float
    ) -> None:
        super().__init__(manifest, start_timeout_s=start_timeout_s, timeout_s=timeout_s)
        self.root = root
        self.model_dir = root / "model"
        self.socket_path = str(root / "server.sock")
        self.process: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def launch(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_ENV)}
        env.update(SM_MODEL_DIR=str(self.model_dir), PYTHONUNBUFFERED="1")
        self.process = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, str(SERVER), str(self.model_dir), self.socket_path],
            cwd=self.model_dir,
            env=env,
            stdin=subprocess.DEVNULL,
        )

    async def answers(self) -> bool:
        # the server renames its socket there once it listens (one stat: no thread needed)
        return os.path.exists(self.socket_path)  # noqa: ASYNC240

    async def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None

    async def exchange(self, body: bytes, content_type: str, accept: str | None) -> Reply:
        header = {"content_type": content_type, "accept": accept, "length": len(body)}
        reader, writer = await asyncio.open_unix_connection(self.socket_path)
        try:
            writer.write(json.dumps(header).encode() + b"\n" + body)
            await writer.drain()
            answer: dict[str, Any] = json.loads(await reader.readline())
            out = await reader.readexactly(int(answer["length"]))
        finally:
            writer.close()
        content_type, error = answer.get("content_type", ""), answer.get("error", "")
        return Reply(int(answer["status"]), out, str(content_type), str(error))

    async def stop(self) -> None:
        self._kill()

    def exited_message(self, code: int) -> str:
        return (
            f"the model server exited with code {code} before serving (model_fn or "
            "inference.py failed; its traceback is in the gateway's log)"
        )

    def slow_start_message(self) -> str:
        return f"model_fn did not finish within {self.start_timeout_s:g} s"

    def describe(self) -> str:
        pid = self.process.pid if self.process else None
        return f"model server of {self.root} (pid {pid})"

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def close(self) -> None:
        """Stop the server and remove the package's files."""
        super().close()
        self._kill()
        shutil.rmtree(self.root, ignore_errors=True)


class ScriptModels:
    """Loads packages for the gateway's cache: script packages here (or in their container, when
    they name an image), the others by `load_model`."""

    def __init__(
        self,
        *,
        start_timeout_s: float,
        timeout_s: float,
        containers: ContainerModels | None = None,
    ) -> None:
        self.start_timeout_s = start_timeout_s
        self.timeout_s = timeout_s
        self.containers = containers
        self.models: set[ScriptModel] = set()

    def load(self, store: ObjectStore, uri: str) -> LoadedModel:
        manifest = read_manifest(store, uri)
        if manifest.framework != "script":
            return load_model(store, uri)
        if manifest.details.get("image"):
            if self.containers is None:
                raise UnsupportedModelPackage(
                    f"package {uri} is served by its image {manifest.details['image']!r}, and "
                    "this gateway serves no container models"
                )
            return self.containers.load(store, uri)
        root = Path(tempfile.mkdtemp(prefix="cairn-script-"))  # short: Unix socket paths are
        try:
            manifest = download_package(store, uri, root / "model")
            if not any((root / "model" / name).is_file() for name in SCRIPT_FILES):
                raise UnsupportedModelPackage(
                    f"script package {uri} has no {' or '.join(SCRIPT_FILES)} to serve it with",
                    files=sorted(manifest.files),
                )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        model = ScriptModel(
            manifest, root, start_timeout_s=self.start_timeout_s, timeout_s=self.timeout_s
        )
        self.models.add(model)
        return model

    def evicted(self, model: LoadedModel) -> None:
        if isinstance(model, ScriptModel):
            self.models.discard(model)
            model.close()
        elif self.containers is not None:
            self.containers.evicted(model)

    def close(self) -> None:
        for model in list(self.models):
            self.evicted(model)
        if self.containers is not None:
            self.containers.close()
