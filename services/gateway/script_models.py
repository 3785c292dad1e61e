"""Packages with their own inference code (framework `script`), served by a model server each.

User code never runs in the gateway's process: each script package gets a `model_server.py`
process (SageMaker's inference-toolkit contract), started on its first request, reached over a
Unix socket in a private temp directory, restarted on the next request once it died. A request
the user code fails on, or one it does not answer within `script_invocation_timeout_s` (the
server is then killed and started again at once), is a ModelError of that request only.
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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.artifacts import (
    LoadedModel,
    ModelManifest,
    UnsupportedModelPackage,
    download_package,
    load_model,
    read_manifest,
)
from cairn.artifacts.signature import Cell
from cairn.errors import CairnError, InvalidInput
from cairn.store.base import ObjectStore

from services.gateway.model_server import SCRIPT_FILES

log = logging.getLogger("cairn.gateway")

SERVER = Path(__file__).with_name("model_server.py")
_POLL_S = 0.02
# The gateway's own credentials stay out of user code's environment.
_PRIVATE_ENV = ("CAIRN_", "AWS_")
_INVOCATIONS_ONLY = (
    "a script model answers SageMaker invocations only (its inference.py decodes the body): "
    "v2, v1, async requests and pipelines cannot feed it rows"
)


class ScriptModelError(CairnError):
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


class ScriptModel(LoadedModel):
    """A script package on disk and its model-server process (none until the first request)."""

    def __init__(
        self, manifest: ModelManifest, root: Path, *, start_timeout_s: float, timeout_s: float
    ) -> None:
        super().__init__(manifest)
        self.root = root
        self.model_dir = root / "model"
        self.socket_path = str(root / "server.sock")
        self.start_timeout_s = start_timeout_s
        self.timeout_s = timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._lock = asyncio.Lock()
        self._restart: asyncio.Task[None] | None = None

    def encode_rows(self, rows: Sequence[Sequence[Cell]]) -> npt.NDArray[np.float32]:
        raise InvalidInput(_INVOCATIONS_ONLY)

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
        raise InvalidInput(_INVOCATIONS_ONLY)

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        raise InvalidInput(_INVOCATIONS_ONLY)

    async def invoke(self, body: bytes, content_type: str, accept: str | None) -> tuple[bytes, str]:
        """One request through the user's input_fn, predict_fn and output_fn.

        Requests queue for the server (it answers one at a time); the timeout counts from the
        moment this one is sent, so a slow model_fn at start does not fail it.
        """
        async with self._lock:
            await self._ensure_started()
            try:
                answer, out = await asyncio.wait_for(
                    self._exchange(body, content_type, accept), self.timeout_s
                )
            except TimeoutError:
                pid = self.process.pid if self.process else None
                log.warning("model server %s (pid %s) hung: killed, restarting", self.root, pid)
                self._kill()
                self._restart = asyncio.get_running_loop().create_task(self._start_locked())
                raise ScriptModelError(
                    f"the model did not answer within {self.timeout_s:g} s: its server was "
                    "restarted"
                ) from None
            except (OSError, ValueError, asyncio.IncompleteReadError) as error:
                code = self.process.poll() if self.process else None
                self._kill()
                raise ScriptModelError(
                    f"the model server died while answering (exit code {code}): it restarts "
                    "with the next request",
                    reason=type(error).__name__,
                ) from None
        status = int(answer["status"])
        if 400 <= status < 500:
            refusal = _REFUSALS.get(status, ScriptInputRefused)
            raise refusal(str(answer["error"]), model_status=status)
        if status != 200:
            raise ScriptModelError(str(answer["error"]), model_status=status)
        return out, str(answer["content_type"])

    async def _exchange(
        self, body: bytes, content_type: str, accept: str | None
    ) -> tuple[dict[str, Any], bytes]:
        header = {"content_type": content_type, "accept": accept, "length": len(body)}
        reader, writer = await asyncio.open_unix_connection(self.socket_path)
        try:
            writer.write(json.dumps(header).encode() + b"\n" + body)
            await writer.drain()
            answer: dict[str, Any] = json.loads(await reader.readline())
            return answer, await reader.readexactly(int(answer["length"]))
        finally:
            writer.close()

    async def _start_locked(self) -> None:
        async with self._lock:
            with contextlib.suppress(CairnError):
                await self._ensure_started()

    async def _ensure_started(self) -> None:
        """Start the server unless it runs; wait until its socket accepts or it exits."""
        if self.process is not None and self.process.poll() is None:
            return
        self._kill()
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_ENV)}
        env.update(SM_MODEL_DIR=str(self.model_dir), PYTHONUNBUFFERED="1")
        self.process = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, str(SERVER), str(self.model_dir), self.socket_path],
            cwd=self.model_dir,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout_s
        while not self._listening():
            code = self.process.poll()
            if code is not None:
                raise ScriptModelError(
                    f"the model server exited with code {code} before serving (model_fn or "
                    "inference.py failed; its traceback is in the gateway's log)"
                )
            if time.monotonic() > deadline:
                self._kill()
                raise ScriptModelError(f"model_fn did not finish within {self.start_timeout_s:g} s")
            await asyncio.sleep(_POLL_S)
        log.info("model server of %s serving (pid %d)", self.root, self.process.pid)

    def _listening(self) -> bool:
        return os.path.exists(self.socket_path)  # the server renames it there once it listens

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def close(self) -> None:
        """Stop the server and remove the package's files."""
        if self._restart is not None:
            self._restart.cancel()
        self._kill()
        shutil.rmtree(self.root, ignore_errors=True)


class ScriptModels:
    """Loads packages for the gateway's cache: script packages here, the others by `load_model`."""

    def __init__(self, *, start_timeout_s: float, timeout_s: float) -> None:
        self.start_timeout_s = start_timeout_s
        self.timeout_s = timeout_s
        self.models: set[ScriptModel] = set()

    def load(self, store: ObjectStore, uri: str) -> LoadedModel:
        if read_manifest(store, uri).framework != "script":
            return load_model(store, uri)
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

    def close(self) -> None:
        for model in list(self.models):
            self.evicted(model)
