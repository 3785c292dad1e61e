"""Adaptive micro-batching: concurrent requests for one model are stacked into one predict call.

There is no fixed delay. A request that is alone predicts at once on the event loop (the cheapest
path for one client). When several are in flight they queue; each batch is predicted as one call
and whatever queued while it ran becomes the next batch. Batches therefore grow with load and cost
no latency without it. `max_wait_s` optionally holds a partly filled batch a little longer under
load.

A batch of at most `inline_max_rows` rows predicts on the event loop; a larger one in a worker
thread (XGBoost releases the GIL, so the loop keeps parsing requests meanwhile). Small batches
used to go to the thread too, and that hand-over was the gateway's p99 at 8 clients: the thread
runs Python around the predict (stacking, XGBoost's own argument checks, the batch metric) while
the loop runs Python too, and each waits for the other's GIL up to the 5 ms switch interval. On
the loop a batch of 64 single-row requests costs ~0.3 ms (bench/gateway/README.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
PredictFn = Callable[[Matrix], npt.NDArray[Any]]
BatchObserver = Callable[[int], None]


class MicroBatcher:
    """Batches `predict` calls for one model; results come back split per request."""

    def __init__(
        self,
        predict: PredictFn,
        executor: Executor,
        *,
        max_batch_rows: int = 64,
        max_wait_s: float = 0.0,
        on_batch: BatchObserver | None = None,
        inline_max_rows: int = 0,
    ) -> None:
        self._predict = predict
        self._executor = executor
        self.max_batch_rows = max_batch_rows
        self.inline_max_rows = inline_max_rows
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._pending: deque[tuple[Matrix, asyncio.Future[npt.NDArray[Any]]]] = deque()
        self._pending_rows = 0
        self._scheduled = False
        self._running = False
        self._waited = False

    @property
    def busy(self) -> bool:
        return self._running or bool(self._pending)

    def predict_now(self, matrix: Matrix) -> npt.NDArray[Any]:
        """Predict inline on the caller's thread (the path for a lone request)."""
        if self._on_batch is not None:
            self._on_batch(len(matrix))
        return self._predict(matrix)

    async def predict(self, matrix: Matrix) -> npt.NDArray[Any]:
        """Queue the rows for the next batch and wait for their predictions."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[npt.NDArray[Any]] = loop.create_future()
        self._pending.append((matrix, future))
        self._pending_rows += len(matrix)
        if not self._scheduled and not self._running:
            self._scheduled = True
            # call_soon runs after the callbacks already due, so requests parsed in this
            # loop iteration join the same batch.
            loop.call_soon(self._start_batch, loop)
        return await future

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if self._running or not self._pending:
            return
        if self.max_wait_s > 0 and self._pending_rows < self.max_batch_rows and not self._waited:
            self._waited = True
            self._scheduled = True
            loop.call_later(self.max_wait_s, self._start_batch, loop)
            return
        self._waited = False
        batch: list[tuple[Matrix, asyncio.Future[npt.NDArray[Any]]]] = []
        rows = 0
        while self._pending and (
            not batch or rows + len(self._pending[0][0]) <= self.max_batch_rows
        ):
            item = self._pending.popleft()
            batch.append(item)
            rows += len(item[0])
        self._pending_rows -= rows
        self._running = True
        matrices = [matrix for matrix, _ in batch]
        if rows <= self.inline_max_rows:
            self._finish(loop, batch, self._predict_inline(loop, matrices))
            return
        work = loop.run_in_executor(self._executor, self._predict_stacked, matrices)
        work.add_done_callback(lambda done: self._finish(loop, batch, done))

    def _predict_inline(
        self, loop: asyncio.AbstractEventLoop, matrices: list[Matrix]
    ) -> asyncio.Future[npt.NDArray[Any]]:
        """The batch predicted on the loop, as the done future `_finish` takes."""
        done: asyncio.Future[npt.NDArray[Any]] = loop.create_future()
        try:
            done.set_result(self._predict_stacked(matrices))
        except Exception as error:
            done.set_exception(error)
        return done

    def _predict_stacked(self, matrices: list[Matrix]) -> npt.NDArray[Any]:
        stacked = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
        if self._on_batch is not None:
            self._on_batch(len(stacked))
        return self._predict(stacked)

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Matrix, asyncio.Future[npt.NDArray[Any]]]],
        done: asyncio.Future[npt.NDArray[Any]],
    ) -> None:
        self._running = False
        error = done.exception()
        if error is not None:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            result = done.result()
            offset = 0
            for matrix, future in batch:
                end = offset + len(matrix)
                if not future.done():
                    future.set_result(result[offset:end])
                offset = end
        if self._pending:
            self._start_batch(loop)
