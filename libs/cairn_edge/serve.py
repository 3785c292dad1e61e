"""Local inference on loopback: the gateway's CSV / JSON / JSON Lines bodies and OIP v2 tensors.

    POST /invocations                 SageMaker runtime body (Content-Type, Accept)
    POST /v2/models/<any>/infer       Open Inference Protocol v2: one 2-D FP32 tensor
    GET  /ping, /v2/health/ready      200 once a model serves
    GET  /status                      package, counts, latency percentiles (for operators)

The model is swapped by replacing one reference: a request holds the model it started with, so the
old package answers until the new one is loaded and has passed its self-test. Loopback only and
unauthenticated, like a sidecar.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from cairn.artifacts.package import LoadedModel
from cairn.errors import CairnError, InvalidInput
from cairn.inference.payloads import JSON, format_response, media_type, parse_body, split_outputs

from cairn_edge.store import AgentFolder


@dataclass(frozen=True)
class Serving:
    package_name: str
    version: tuple[int, int]
    model: LoadedModel


class Runtime:
    """The model being served, its counters and the sampler of captured requests."""

    def __init__(self, folder: AgentFolder, capture_rate: float, window: int = 2000) -> None:
        self.folder = folder
        self.capture_rate = capture_rate
        self.serving: Serving | None = None
        self._lock = threading.Lock()
        self._latencies_ms: collections.deque[float] = collections.deque(maxlen=window)
        self.requests = 0
        self.errors = 0

    def swap(self, serving: Serving) -> None:
        with self._lock:
            self.serving = serving
            self._latencies_ms.clear()
            self.requests = 0
            self.errors = 0

    def record(self, latency_ms: float, ok: bool) -> None:
        with self._lock:
            self.requests += 1
            if ok:
                self._latencies_ms.append(latency_ms)
            else:
                self.errors += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            latencies = list(self._latencies_ms)
            requests, errors = self.requests, self.errors
        p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else (None, None)
        return {"request_count": requests, "error_count": errors, "p50_ms": p50, "p99_ms": p99}

    def maybe_capture(
        self, serving: Serving, body: bytes, content_type: str, answer: bytes, accept: str
    ) -> None:
        if self.capture_rate <= 0 or random.random() >= self.capture_rate:
            return
        self.folder.capture(
            {
                "captureData": {
                    "endpointInput": _payload(content_type, body, "INPUT"),
                    "endpointOutput": _payload(accept, answer, "OUTPUT"),
                },
                "eventMetadata": {
                    "eventId": str(uuid.uuid4()),
                    "inferenceTime": datetime.now(UTC).isoformat(),
                    "package": serving.package_name,
                },
                "eventVersion": "0",
            }
        )


def _payload(content_type: str, body: bytes, mode: str) -> dict[str, Any]:
    return {
        "observedContentType": content_type,
        "mode": mode,
        "data": body.decode(errors="replace"),
        "encoding": "CSV" if content_type == "text/csv" else "JSON",
    }


def oip_answer(model: LoadedModel, document: Any, model_name: str) -> dict[str, Any]:
    """Open Inference Protocol v2 with one 2-D tensor `[rows, n_inputs]` in signature order."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidInput('"inputs" must hold one tensor of shape [rows, n_inputs]')
    tensor = inputs[0]
    shape, data = tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or len(shape) != 2 or not isinstance(data, list):
        raise InvalidInput("the tensor needs a 2-D shape and its data")
    try:
        matrix = np.asarray(data, dtype=np.float32).reshape(shape)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"the tensor's data does not fit its shape: {error}") from None
    result = model.predict(matrix)
    outputs = [
        {
            "name": name,
            "shape": list(column.shape),
            "datatype": "FP32",
            "data": np.asarray(column).ravel().tolist(),
        }
        for name, column in split_outputs(np.asarray(result), model.output_names)
    ]
    return {"model_name": model_name, "id": document.get("id"), "outputs": outputs}


def make_handler(runtime: Runtime) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            if self.path in ("/ping", "/v2/health/ready"):
                ready = runtime.serving is not None
                self._send(200 if ready else 503, {"ready": ready})
            elif self.path == "/status":
                serving = runtime.serving
                self._send(
                    200,
                    {
                        "package_name": serving.package_name if serving else None,
                        "version": list(serving.version) if serving else None,
                        **runtime.stats(),
                    },
                )
            else:
                self._send(404, {"error": f"no route {self.path}", "code": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            serving = runtime.serving
            if serving is None:
                self._send(503, {"error": "no model is installed yet", "code": "unavailable"})
                return
            started = time.perf_counter()
            try:
                if self.path == "/invocations":
                    content_type = media_type(self.headers.get("Content-Type"))
                    accept = media_type(self.headers.get("Accept"), default=content_type)
                    matrix = parse_body(serving.model, content_type, body)
                    answer, answer_type = format_response(
                        serving.model.predict(matrix), serving.model.output_names, accept
                    )
                elif self.path.startswith("/v2/models/") and self.path.endswith("/infer"):
                    name = self.path.split("/")[3]
                    content_type = answer_type = JSON
                    document = oip_answer(serving.model, _json(body), name)
                    answer = json.dumps(document).encode()
                else:
                    self._send(404, {"error": f"no route {self.path}", "code": "not_found"})
                    return
            except CairnError as error:
                runtime.record(0.0, ok=False)
                self._send(error.http_status, error.to_dict())
                return
            runtime.record((time.perf_counter() - started) * 1000, ok=True)
            self._send_bytes(200, answer, answer_type)
            runtime.maybe_capture(serving, body, content_type, answer, answer_type)

        def _send(self, status: int, document: dict[str, Any]) -> None:
            self._send_bytes(status, json.dumps(document).encode(), JSON)

        def _send_bytes(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise InvalidInput("the body is not JSON") from None


def start_server(runtime: Runtime, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(runtime))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="edge-serve", daemon=True).start()
    return server
