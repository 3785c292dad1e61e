"""What script and container models share: a server of the model's own, started on demand.

A `ServedModel` is a package whose requests go to a server outside the gateway's process (a
`model_server.py` process, or a container), started by its first request and restarted by the
next one once it died. Requests queue for it (it answers one at a time, as SageMaker's toolkit
does); one the server does not answer within `timeout_s` gets a ModelError, and the server is
killed and started again at once. A subclass says how to start, probe, call and stop its server.

  CairnError
    ModelServerError (500, a ModelError on the invocation routes): failed, hung or died
  InvalidInput
    ModelInputRefused (the server's own 4xx status)
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from cairn.artifacts import LoadedModel, ModelManifest
from cairn.artifacts.signature import Cell
from cairn.errors import CairnError, InvalidInput

log = logging.getLogger("cairn.gateway")

INVOCATIONS_ONLY = (
    "a script or container model answers SageMaker invocations only (its own code decodes the "
    "body): v2, v1, async requests and pipelines cannot feed it rows"
)


class ModelServerError(CairnError):
    """The model's server failed, hung or died (SageMaker: the container's 500)."""

    code = "model_server_error"


class ModelInputRefused(InvalidInput):
    """The model's server refused the input with a 4xx of its own (kept as the status)."""

    code = "model_input_refused"


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer of a model's server: its status, body and media type (or error text)."""

    status: int
    body: bytes
    content_type: str
    error: str = ""


class ServedModel(LoadedModel, abc.ABC):
    """A package served by a server of its own; none runs until the first request."""

    failure: ClassVar[type[CairnError]] = ModelServerError
    refusals: ClassVar[Mapping[int, type[InvalidInput]]] = {}
    refused: ClassVar[type[InvalidInput]] = ModelInputRefused
    server_name: ClassVar[str] = "model server"
    poll_s: ClassVar[float] = 0.02
    # What a server that dies mid-request raises out of `exchange`.
    lost: ClassVar[tuple[type[BaseException], ...]] = (OSError, ValueError, EOFError)

    def __init__(
        self, manifest: ModelManifest, *, start_timeout_s: float, timeout_s: float
    ) -> None:
        super().__init__(manifest)
        self.start_timeout_s = start_timeout_s
        self.timeout_s = timeout_s
        self.starts = 0
        self._lock = asyncio.Lock()
        self._restart: asyncio.Task[None] | None = None

    def encode_rows(self, rows: Sequence[Sequence[Cell]]) -> npt.NDArray[np.float32]:
        raise InvalidInput(INVOCATIONS_ONLY)

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
        raise InvalidInput(INVOCATIONS_ONLY)

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        raise InvalidInput(INVOCATIONS_ONLY)

    # What a kind of server implements --------------------------------------------------------

    @abc.abstractmethod
    def running(self) -> bool:
        """A server was started and is not known to have stopped."""

    @abc.abstractmethod
    async def launch(self) -> None:
        """Start the server (it may take a while to answer)."""

    @abc.abstractmethod
    async def answers(self) -> bool:
        """The started server takes requests now."""

    @abc.abstractmethod
    async def exit_code(self) -> int | None:
        """The started server's exit code, None while it runs."""

    @abc.abstractmethod
    async def exchange(self, body: bytes, content_type: str, accept: str | None) -> Reply:
        """One request, sent to the running server."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Kill the server if it runs and forget it."""

    @abc.abstractmethod
    def exited_message(self, code: int) -> str:
        """Why a server that exited before answering did so, as far as the gateway knows."""

    @abc.abstractmethod
    def slow_start_message(self) -> str:
        """What did not finish within `start_timeout_s`."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The server in a log line."""

    # The shared lifecycle ----------------------------------------------------------------------

    async def invoke(self, body: bytes, content_type: str, accept: str | None) -> tuple[bytes, str]:
        """One request through the model's server; the body is its own to decode.

        The timeout counts from the moment this request is sent, so a slow start (model_fn, a
        container's /ping) does not fail it.
        """
        async with self._lock:
            await self._ensure_started()
            try:
                reply = await asyncio.wait_for(
                    self.exchange(body, content_type, accept), self.timeout_s
                )
            except TimeoutError:
                log.warning("%s hung: killed, restarting", self.describe())
                await self.stop()
                self._restart = asyncio.get_running_loop().create_task(self._start_locked())
                raise self.failure(
                    f"the model did not answer within {self.timeout_s:g} s: its "
                    f"{self.server_name} was restarted"
                ) from None
            except self.lost as error:
                code = await self.exit_code()
                await self.stop()
                raise self.failure(
                    f"the {self.server_name} died while answering (exit code {code}): it "
                    "restarts with the next request",
                    reason=type(error).__name__,
                ) from None
        if 400 <= reply.status < 500:
            refusal = self.refusals.get(reply.status, self.refused)(
                reply.error, model_status=reply.status
            )
            refusal.__dict__["http_status"] = reply.status  # the server's own 4xx, not 400
            raise refusal
        if reply.status != 200:
            raise self.failure(reply.error, model_status=reply.status)
        return reply.body, reply.content_type

    async def _start_locked(self) -> None:
        async with self._lock:
            with contextlib.suppress(CairnError):
                await self._ensure_started()

    async def _ensure_started(self) -> None:
        """Start the server unless it runs; wait until it answers or exits.

        What `launch` raises (`Unavailable`: the platform lacks what the server needs) passes
        through uncounted.
        """
        if self.running():
            return
        await self.stop()
        await self.launch()
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout_s
        while not await self.answers():
            code = await self.exit_code()
            if code is not None:
                message = self.exited_message(code)
                await self.stop()
                raise self.failure(message)
            if time.monotonic() > deadline:
                message = self.slow_start_message()
                await self.stop()
                raise self.failure(message)
            await asyncio.sleep(self.poll_s)
        log.info("%s serving", self.describe())

    def close(self) -> None:
        """Stop the server for good (the package was evicted, or the gateway stops)."""
        if self._restart is not None:
            self._restart.cancel()
