"""Invocations through the gateway: SageMaker runtime and Open Inference Protocol v2."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cairn.errors import InvalidInput

from cairn_sdk.base import ServiceCaller
from cairn_sdk.credentials import bearer_headers

ACCESS_KEY_ENV = "CAIRN_ACCESS_KEY"


@dataclass
class Invocation:
    """One gateway answer: the parsed body, which variant served it, and the raw bytes."""

    body: Any
    variant: str | None
    content_type: str
    raw: bytes = field(repr=False)
    latency_ms: float = 0.0

    @property
    def predictions(self) -> list[Any]:
        """The predicted values, one per row, whatever the answer's format was."""
        for key in ("predictions", "scores"):  # SageMaker's RCF answers {"scores": [...]}
            if isinstance(self.body, dict) and key in self.body:
                return [_single(record) for record in self.body[key]]
        if isinstance(self.body, dict) and "outputs" in self.body:
            return list(self.body["outputs"][0]["data"])
        if isinstance(self.body, list):
            return [_single(item) for item in self.body]
        return [self.body]


@dataclass(frozen=True)
class AsyncInvocation:
    """InvokeEndpointAsync's answer: where the result (or the failure reason) will be."""

    inference_id: str
    output_location: str
    failure_location: str


def _single(record: Any) -> Any:
    if isinstance(record, dict) and len(record) == 1:
        return next(iter(record.values()))
    return record


def _parse_answer(raw: bytes, content_type: str) -> Any:
    media = content_type.split(";", 1)[0].strip().lower()
    text = raw.decode(errors="replace")
    if media == "text/csv":
        rows = [line.split(",") for line in text.splitlines() if line.strip()]
        return [float(row[0]) if len(row) == 1 else [float(cell) for cell in row] for row in rows]
    if media in ("application/jsonlines", "application/jsonl", "application/x-ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if media == "application/json":
        return json.loads(text)
    return text


class GatewayCalls(ServiceCaller):
    """The gateway's invocation APIs; `access_key` (when set) replaces the client's credential."""

    access_key: str | None

    def use_access_key(self, key: Mapping[str, Any] | str) -> None:
        """Send this credential (a token, or `create_key`'s answer) with every invocation."""
        self.access_key = key if isinstance(key, str) else str(key["token"])

    def _gateway_headers(self) -> dict[str, str]:
        """The invocation credential when one differs from the client's own."""
        return bearer_headers(self.access_key)

    def invoke(
        self,
        endpoint_name: str,
        body: str | bytes | Any,
        content_type: str = "text/csv",
        *,
        accept: str | None = None,
        target_variant: str | None = None,
        target_model: str | None = None,
        explain: bool = False,
        inference_id: str | None = None,
    ) -> Invocation:
        """InvokeEndpoint (SageMaker runtime); a non-str/bytes body is sent as JSON.

        `target_model` picks one of the endpoint's models (SageMaker's TargetModel): a name
        `endpoint_models` lists.
        """
        if isinstance(body, str | bytes):
            payload = body.encode() if isinstance(body, str) else body
        else:
            payload = json.dumps(body).encode()
            content_type = "application/json"
        headers = {**self._gateway_headers(), "Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        if target_variant:
            headers["X-Amzn-SageMaker-Target-Variant"] = target_variant
        if target_model:
            headers["X-Amzn-SageMaker-Target-Model"] = target_model
        if explain:
            headers["X-Amzn-SageMaker-Enable-Explanations"] = "true"
        if inference_id:
            headers["X-Amzn-SageMaker-Inference-Id"] = inference_id
        started = time.perf_counter()
        path = f"/endpoints/{endpoint_name}/invocations"
        response = self._send("POST", "gateway", path, content=payload, headers=headers)
        answer_type = response.headers.get("content-type", "application/json")
        return Invocation(
            body=_parse_answer(response.content, answer_type),
            variant=response.headers.get("x-amzn-invoked-production-variant"),
            content_type=answer_type,
            raw=response.content,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def invoke_async(
        self,
        endpoint_name: str,
        body: str | bytes | None = None,
        content_type: str = "text/csv",
        *,
        input_location: str | None = None,
        accept: str | None = None,
        inference_id: str | None = None,
        request_ttl_s: int | None = None,
        invocation_timeout_s: int | None = None,
    ) -> AsyncInvocation:
        """InvokeEndpointAsync: queue a request; the answer lands at `output_location`.

        Give the input as `input_location` (a store key, or its `s3://` URI) or as an inline
        `body` (stored by the gateway first). `AsyncInferenceCompleted` / `AsyncInferenceFailed`
        announce the outcome.
        """
        if (body is None) == (input_location is None):
            raise InvalidInput("give exactly one of body or input_location")
        headers = {**self._gateway_headers(), "X-Amzn-SageMaker-Content-Type": content_type}
        optional = {
            "X-Amzn-SageMaker-InputLocation": input_location,
            "X-Amzn-SageMaker-Accept": accept,
            "X-Amzn-SageMaker-Inference-Id": inference_id,
            "X-Amzn-SageMaker-RequestTTLSeconds": request_ttl_s,
            "X-Amzn-SageMaker-InvocationTimeoutSeconds": invocation_timeout_s,
        }
        headers |= {name: str(value) for name, value in optional.items() if value is not None}
        payload = body.encode() if isinstance(body, str) else body or b""
        path = f"/endpoints/{endpoint_name}/async-invocations"
        answer = self._send("POST", "gateway", path, content=payload, headers=headers).json()
        return AsyncInvocation(
            inference_id=answer["InferenceId"],
            output_location=answer["OutputLocation"],
            failure_location=answer["FailureLocation"],
        )

    def invoke_v2(
        self,
        model_name: str,
        rows: Sequence[Sequence[Any]],
        *,
        version: str | None = None,
        explain: bool = False,
        request_id: str | None = None,
    ) -> Invocation:
        """Open Inference Protocol v2 infer of rows in signature order.

        Numeric rows go as one [rows, columns] FP64 tensor; rows with categories go as one 1-D
        tensor per input column (BYTES for categories), named from the model's v2 metadata.
        """
        flat = [cell for row in rows for cell in row]
        request: dict[str, Any]
        if any(isinstance(cell, str) for cell in flat):
            request = {"inputs": self._column_tensors(model_name, rows)}
        else:
            width = len(rows[0]) if rows else 0
            tensor = {"name": "input-0", "shape": [len(rows), width], "datatype": "FP64"}
            request = {"inputs": [{**tensor, "data": flat}]}
        if explain:
            request["parameters"] = {"explain": True}
        if request_id:
            request["id"] = request_id
        path = f"/v2/models/{model_name}"
        path += f"/versions/{version}/infer" if version else "/infer"
        started = time.perf_counter()
        response = self._send(
            "POST", "gateway", path, json=request, headers=self._gateway_headers()
        )
        answer = response.json()
        return Invocation(
            body=answer,
            variant=answer.get("model_version"),
            content_type="application/json",
            raw=response.content,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def endpoint_models(self, endpoint_name: str) -> dict[str, Any]:
        """The models an endpoint serves (what `target_model` may name) and their bytes, as the
        gateway replica that answers has them loaded."""
        return dict(self._json("GET", "gateway", f"/endpoints/{endpoint_name}/models"))

    def model_metadata(self, model_name: str) -> dict[str, Any]:
        """OIP v2 model metadata: input and output tensors (names, datatypes)."""
        return dict(self._json("GET", "gateway", f"/v2/models/{model_name}"))

    def _column_tensors(
        self, model_name: str, rows: Sequence[Sequence[Any]]
    ) -> list[dict[str, Any]]:
        inputs = self.model_metadata(model_name)["inputs"]
        if any(len(row) != len(inputs) for row in rows):
            raise InvalidInput(f"{model_name} takes {len(inputs)} columns per row")
        tensors = []
        for index, column in enumerate(inputs):
            values = [row[index] for row in rows]
            if column["datatype"] == "BYTES":
                values = [str(value) for value in values]
                datatype = "BYTES"
            else:
                datatype = "FP64"
            tensor = {"name": column["name"], "shape": [len(rows)], "datatype": datatype}
            tensors.append({**tensor, "data": values})
        return tensors
