"""SageMaker runtime payloads: CSV, JSON and JSON Lines in; predictions (and explanations) out.

One implementation for every place that scores a model (the gateway's invocations, batch transform).

Accepted bodies, one or more rows each:
- text/csv: one row per line, columns in signature order (empty cell = missing);
- application/json: `{"instances": [...]}`, a bare list of rows, one row, records by column name
  (`{"age": 41, ...}` or a list of them), or `{"instances": [{"features": [...]}]}`;
- application/jsonlines: one JSON row or record per line;
- text/plain: one value per line (a sentence for BlazingText), for a model with one input.
Answers follow `Accept` (default: the request's type): CSV, one line per row; JSON
`{"predictions": [{<output>: value}, ...]}` (plus `explanations`), or the envelope the model's
algorithm answers with in SageMaker (`LoadedModel.response_envelope`: RCF's `{"scores": [...]}`,
BlazingText's bare list); JSON Lines, an object a line.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from cairn.artifacts import LoadedModel
from cairn.errors import InvalidInput

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
TEXT = "text/plain"
_JSONLINES_ALIASES = frozenset({JSONLINES, "application/jsonl", "application/x-ndjson"})

Matrix = npt.NDArray[np.float32]


class UnsupportedMediaType(InvalidInput):
    http_status = 415
    code = "unsupported_media_type"


def media_type(header: str | None, default: str = CSV) -> str:
    """The bare, lower-case media type of a Content-Type / Accept header."""
    if not header:
        return default
    value = header.split(";", 1)[0].split(",", 1)[0].strip().lower()
    if value in _JSONLINES_ALIASES:
        return JSONLINES
    if value in ("*/*", ""):
        return default
    return value


def parse_body(model: LoadedModel, content_type: str, body: bytes) -> Matrix:
    """Encode a request body into the model's input matrix; InvalidInput says what is wrong."""
    return encode_items(model, parse_items(content_type, body))


def parse_items(content_type: str, body: bytes) -> list[Any]:
    """The rows (lists, signature order) or records (objects, by column name) a body holds."""
    if not body.strip():
        raise InvalidInput("the request body is empty")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise InvalidInput("the request body is not UTF-8 text") from None
    if content_type == CSV:
        return [line.split(",") for line in text.splitlines() if line.strip()]
    if content_type == JSON:
        return _json_items(_loads(text))
    if content_type == JSONLINES:
        return [_unwrap_features(_loads(line)) for line in text.splitlines() if line.strip()]
    if content_type == TEXT:
        return [line.strip() for line in text.splitlines() if line.strip()]
    raise UnsupportedMediaType(
        f"content type {content_type!r} is not supported: use {CSV}, {JSON}, {JSONLINES} or {TEXT}",
        supported=[CSV, JSON, JSONLINES, TEXT],
    )


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"the request body is not valid JSON: {error}") from None
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise InvalidInput("the request body holds a number with too many digits") from None


def _unwrap_features(item: Any) -> Any:
    """`{"features": [...]}` is the row it wraps."""
    if isinstance(item, dict) and set(item) == {"features"}:
        return item["features"]
    return item


def _json_items(document: Any) -> list[Any]:
    if isinstance(document, dict):
        if "instances" in document:
            instances = document["instances"]
            if not isinstance(instances, list):
                raise InvalidInput('"instances" must be a list of rows or records')
            return [_unwrap_features(item) for item in instances]
        return [_unwrap_features(document)]
    if isinstance(document, list):
        if document and all(not isinstance(cell, list | dict) for cell in document):
            return [document]  # a single row
        return [_unwrap_features(item) for item in document]
    raise InvalidInput("a JSON body must be a row, a list of rows or {'instances': [...]}")


def instances(document: Any) -> list[Any]:
    """The rows or records of KServe v1's `{"instances": [...]}` (the only shape v1 takes)."""
    if not isinstance(document, dict) or "instances" not in document:
        raise InvalidInput('a v1 predict request is {"instances": [rows or records]}')
    return _json_items(document)


def encode_items(model: LoadedModel, items: list[Any]) -> Matrix:
    """Rows (all lists) or records (all objects) -> the model's input matrix."""
    if not items:
        raise InvalidInput("the request holds no rows")
    if model.n_inputs == 1 and all(isinstance(item, str | int | float) for item in items):
        items = [[item] for item in items]  # {"instances": ["a sentence", ...]} (BlazingText)
    if all(isinstance(item, dict) for item in items):
        return model.encode_records(items)
    if all(isinstance(item, list) for item in items):
        for index, row in enumerate(items):
            for cell in row:
                if isinstance(cell, list | dict):
                    raise InvalidInput(f"row {index} holds a nested value; rows must be flat")
        return model.encode_rows(items)
    raise InvalidInput("rows must all be lists (signature order) or all objects (by column name)")


def split_outputs(
    result: npt.NDArray[Any], output_names: list[str]
) -> list[tuple[str, npt.NDArray[Any]]]:
    """Name the result's columns: one per manifest output; a single output keeps all columns."""
    if result.ndim == 1:
        return [(output_names[0] if output_names else "output_0", result)]
    width = result.shape[1]
    if len(output_names) == width:
        return [(name, result[:, index]) for index, name in enumerate(output_names)]
    if len(output_names) == 1:
        return [(output_names[0], result)]
    return [(f"output_{index}", result[:, index]) for index in range(width)]


def prediction_records(result: npt.NDArray[Any], output_names: list[str]) -> list[dict[str, Any]]:
    """One `{output name: value}` per row."""
    outputs = [(name, column.tolist()) for name, column in split_outputs(result, output_names)]
    if len(outputs) == 1:
        name, values = outputs[0]
        return [{name: value} for value in values]
    return [{name: values[row] for name, values in outputs} for row in range(len(result))]


def explanation_records(
    contributions: npt.NDArray[Any], input_names: list[str]
) -> list[dict[str, Any]]:
    """Per row: each feature's contribution to the raw score, and the bias (expected value)."""
    records: list[dict[str, Any]] = []
    for row in np.asarray(contributions).tolist():
        if row and isinstance(row[0], list):  # multiclass: one contribution row per class
            records.append(
                {
                    "feature_contributions": [dict(zip(input_names, r, strict=False)) for r in row],
                    "bias": [r[-1] for r in row],
                }
            )
        else:
            records.append(
                {
                    "feature_contributions": dict(zip(input_names, row, strict=False)),
                    "bias": row[-1],
                }
            )
    return records


def format_response(
    result: npt.NDArray[Any],
    output_names: list[str],
    accept: str,
    explanations: list[dict[str, Any]] | None = None,
    envelope: str | None = "predictions",
) -> tuple[bytes, str]:
    """The response body and its content type for `accept` (CSV, JSON or JSON Lines).

    `envelope` is the JSON key holding the records (SageMaker's per-algorithm name), or None
    for a bare list (kept as `predictions` when explanations come with it)."""
    if explanations is not None and accept == CSV:
        accept = JSON  # contributions have no CSV shape; JSON carries both
    if accept == CSV:
        if result.ndim == 1:
            text = "\n".join(map(repr, result.tolist()))
        else:
            text = "\n".join(",".join(map(repr, row)) for row in result.tolist())
        return (text + "\n").encode(), CSV
    records = prediction_records(result, output_names)
    if accept == JSONLINES:
        if explanations is not None:
            records = [
                {**record, "explanation": explanation}
                for record, explanation in zip(records, explanations, strict=True)
            ]
        return ("\n".join(json.dumps(record) for record in records) + "\n").encode(), JSONLINES
    if accept != JSON:
        raise UnsupportedMediaType(
            f"cannot answer in {accept!r}: accept {CSV}, {JSON} or {JSONLINES}"
        )
    if envelope is None and explanations is None:
        return json.dumps(records).encode(), JSON
    document: dict[str, Any] = {envelope or "predictions": records}
    if explanations is not None:
        document["explanations"] = explanations
    return json.dumps(document).encode(), JSON
