"""Captured traffic: the rows, predictions and inference ids of SageMaker capture records.

Each line of a capture file is validated as the gateway's `CaptureRecord` contract; the request and
response bodies inside it are parsed by their content type (CSV, JSON, JSON Lines, Open Inference
Protocol v2). A line that cannot be read is counted and skipped.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from cairn.contracts.state import CaptureRecord

log = logging.getLogger("cairn.monitor.capture")

Row = list[Any] | dict[str, Any]


@dataclass
class CapturedRow:
    """One model input row from the capture, its prediction, and the key ground truth joins on."""

    inference_key: str | None
    row: Row
    prediction: float | list[float] | None


def _payload_text(payload: dict[str, Any]) -> str:
    data = str(payload.get("data", ""))
    if payload.get("encoding") == "BASE64":
        return base64.b64decode(data).decode()
    return data


def _input_rows(content_type: str, text: str) -> list[Row]:
    if content_type.startswith("text/csv"):
        return [[cell.strip() for cell in line.split(",")] for line in text.splitlines() if line]
    if "jsonlines" in content_type or "ndjson" in content_type:
        return [_unwrap(json.loads(line)) for line in text.splitlines() if line.strip()]
    document = json.loads(text)
    if isinstance(document, dict) and "inputs" in document:  # Open Inference Protocol v2
        return _v2_rows(document["inputs"])
    if isinstance(document, dict) and "instances" in document:
        return [_unwrap(item) for item in document["instances"]]
    if isinstance(document, list):
        if document and all(not isinstance(cell, list | dict) for cell in document):
            return [document]
        return [_unwrap(item) for item in document]
    return [_unwrap(document)]


def _unwrap(item: Any) -> Row:
    if isinstance(item, dict) and set(item) == {"features"}:
        item = item["features"]
    return item if isinstance(item, dict) else list(item)


def _v2_rows(inputs: list[dict[str, Any]]) -> list[Row]:
    if len(inputs) == 1:  # one [n, k] tensor in signature order
        tensor = inputs[0]
        data, shape = list(np.ravel(tensor["data"])), tensor.get("shape") or [1, -1]
        width = int(shape[-1]) if len(shape) > 1 and int(shape[-1]) > 0 else len(data)
        return [data[start : start + width] for start in range(0, len(data), width)]
    columns = {tensor["name"]: list(np.ravel(tensor["data"])) for tensor in inputs}
    count = max(len(values) for values in columns.values())
    return [{name: values[i] for name, values in columns.items()} for i in range(count)]


def _predictions(content_type: str, text: str) -> list[float | list[float] | None]:
    if content_type.startswith("text/csv"):
        return [_number_or_list(line.split(",")) for line in text.splitlines() if line.strip()]
    if "jsonlines" in content_type:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        document = json.loads(text)
        if isinstance(document, dict) and "outputs" in document:
            data = document["outputs"][0]["data"] if document["outputs"] else []
            return [_number_or_list(value) for value in data]
        items = document.get("predictions", []) if isinstance(document, dict) else document
    return [_number_or_list(item) for item in items]


def _number_or_list(value: Any) -> float | list[float] | None:
    if isinstance(value, dict):
        value = next(iter(value.values()), None)
    if isinstance(value, list):
        if len(value) == 1:
            return _number_or_list(value[0])
        return [float(item) for item in value]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_capture_line(line: str) -> list[CapturedRow]:
    """The rows of one SageMaker capture record (one request), keyed for ground-truth joins.

    A single-row request is keyed by its inference id; row `i` of a larger one by `id:i`.
    """
    record = CaptureRecord.model_validate_json(line)
    capture = record.captureData
    inputs = capture.get("endpointInput", {})
    outputs = capture.get("endpointOutput", {})
    rows = _input_rows(str(inputs.get("observedContentType", "text/csv")), _payload_text(inputs))
    try:
        predictions = _predictions(
            str(outputs.get("observedContentType", "text/csv")), _payload_text(outputs)
        )
    except (ValueError, KeyError, TypeError, IndexError):
        predictions = []
    if len(predictions) != len(rows):
        predictions = [None] * len(rows)
    inference_id = record.eventMetadata.get("inferenceId")
    keyed: list[CapturedRow] = []
    for index, (row, prediction) in enumerate(zip(rows, predictions, strict=True)):
        key = None
        if inference_id is not None:
            key = str(inference_id) if len(rows) == 1 else f"{inference_id}:{index}"
        keyed.append(CapturedRow(key, row, prediction))
    return keyed


def parse_capture(lines: Iterable[str]) -> tuple[list[CapturedRow], int]:
    """Every row of a capture file's lines, and how many lines could not be read."""
    rows: list[CapturedRow] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rows.extend(parse_capture_line(line))
        except (ValueError, KeyError, TypeError) as error:
            log.warning("unreadable capture record: %s", error)
            bad += 1
    return rows, bad
