"""Large requests on the GPU: a batch of thousands of rows is where a device beats the cores.

Detection is the kernel's (`cairn.gpu.gpu_status`), once at start-up. When a GPU is usable and
allowed (`CAIRN_GATEWAY_GPU=auto`), every XGBoost model loads a second booster onto it; a request
of at least `gpu_min_rows` rows predicts there, in the executor, outside the micro-batcher (it is
a batch already). Smaller requests never get here: their path is unchanged, on the CPU booster.
Large requests record the device that served them, as the `X-Cairn-Device` header and in
`cairn_gateway_large_request_rows_total`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.artifacts import LoadedModel
from cairn.artifacts.package import XGBoostModel
from cairn.gpu import gpu_status
from cairn.store.base import ObjectStore
from prometheus_client import Counter
from starlette.types import Message, Send

from services.gateway.config import GatewaySettings
from services.gateway.metrics import VariantMeter
from services.gateway.runtime import ServingModel

log = logging.getLogger("cairn.gateway")

Matrix = npt.NDArray[np.float32]
Loader = Callable[[ObjectStore, str], LoadedModel]
CpuPredict = Callable[[ServingModel, Matrix], Awaitable[Any]]

LARGE_REQUEST_ROWS = Counter(
    "cairn_gateway_large_request_rows",
    "Rows of large requests (at least gpu_min_rows) predicted, by endpoint, variant and the "
    "device that served them (cpu, cuda).",
    ["endpoint", "variant", "device"],
)
H_DEVICE = b"x-cairn-device"


class GpuServing:
    """Whether this replica predicts large requests on a GPU, and the path they take."""

    def __init__(self, settings: GatewaySettings, executor: Executor) -> None:
        self.executor = executor
        self.min_rows = settings.gpu_min_rows
        if settings.gpu == "off":
            self.usable, self.detail = False, "turned off (CAIRN_GATEWAY_GPU=off)"
        else:
            self.usable, self.detail = gpu_status()
        log.info(
            "GPU for requests of %d rows or more: %s (%s)",
            self.min_rows,
            "cuda" if self.usable else "none, the CPU serves them",
            self.detail,
        )

    def describe(self) -> dict[str, Any]:
        """What `GET /endpoints/{name}/models` shows under `gpu`."""
        return {"usable": self.usable, "detail": self.detail, "min_rows": self.min_rows}

    def loader(self, load: Loader) -> Loader:
        """`load`, then a copy of each XGBoost booster on the GPU (when there is one to use)."""
        if not self.usable:
            return load

        def load_onto_gpu(store: ObjectStore, uri: str) -> LoadedModel:
            model = load(store, uri)
            if isinstance(model, XGBoostModel):
                model.use_gpu()
                log.info("model %s also loaded on the GPU for large requests", uri)
            return model

        return load_onto_gpu

    async def predict(
        self, serving: ServingModel, meter: VariantMeter, matrix: Matrix, cpu: CpuPredict
    ) -> tuple[Any, str]:
        """A large request's prediction and its device: the GPU booster when the model has
        one, else `cpu` (the gateway's ordinary path)."""
        model = serving.model
        if isinstance(model, XGBoostModel) and "cuda" in model.devices:
            device = "cuda"
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, model.predict_on, matrix, device)
        else:
            device = "cpu"
            result = await cpu(serving, matrix)
        LARGE_REQUEST_ROWS.labels(meter.endpoint, meter.variant, device).inc(len(matrix))
        return result, device


def with_device(send: Send, device: str) -> Send:
    """`send`, adding `X-Cairn-Device` to the response's headers."""
    header = (H_DEVICE, device.encode())

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], header]}
        await send(message)

    return sending
