"""Scoring against a live endpoint (`endpoint_name`): the records go to the gateway over HTTP.

The request is what the in-worker scorer would have encoded: the input filter's selection of each
record, in the job's ContentType (a raw line when the filter is `$`); a CSV row with a header
naming the model's columns is reordered to the model's order, which the gateway's Open Inference
Protocol metadata gives. Parquet rows go as JSON Lines objects by column name (or rows in column
order when the columns do not name the model's inputs), since an invocation carries text.

The answers are turned into what the in-worker scorer produces, so a job writes the same output
either way: CSV lines as the gateway wrote them, or one object per record. Explanations come in
JSON (the gateway has no CSV shape for them) and are laid out as the in-worker CSV lays them out.
Numbers come back as JSON: a Parquet output column whose every value is exactly a float32 (as
XGBoost and ONNX models answer) is stored as float32 again.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
from cairn.inference import CSV, JSONLINES

from services.batch.columnar import ScoredColumns, row_error
from services.batch.endpoint import EndpointClient, Refusal
from services.batch.scoring import model_input
from services.batch.transform import (
    Item,
    RecordError,
    Scored,
    csv_line,
    parse_record,
    reason_of,
    record_error,
)
from services.batch.validation import Plan

EXPLANATION = "explanation"


class RemoteTextScorer:
    """Scores CSV / JSON Lines mini-batches with one invocation each."""

    def __init__(self, client: EndpointClient, plan: Plan) -> None:
        assert plan.request.endpoint_name is not None
        self.client = client
        self.plan = plan
        self.endpoint = plan.request.endpoint_name
        self.explain = plan.request.explain
        self.raw = plan.input_filter.is_identity and not plan.request.transform_input.csv_header

    def score(
        self, batch: list[Item], header: list[str] | None, errors: list[RecordError]
    ) -> Scored | None:
        payloads, kept, items = self._payloads(batch, header, errors)
        if not kept:
            return None
        as_json = self.explain or self.plan.accept != CSV
        answers = self.client.score_lines(
            self.endpoint,
            payloads,
            content_type=self.plan.content_type,
            accept=JSONLINES if as_json else CSV,
            explain=self.explain,
        )
        scored: list[Item] = []
        outputs: list[Any] = []
        parsed: list[Any] = []
        for position, (item, answer) in enumerate(zip(kept, answers, strict=True)):
            try:
                output = _output(answer, as_json, self.plan.accept == CSV)
            except ValueError as error:
                errors.append(record_error(item, reason_of(error)))
                continue
            scored.append(item)
            outputs.append(output)
            if items is not None:
                parsed.append(items[position])
        if self.plan.accept == CSV:
            return Scored(scored, parsed if items is not None else None, csv_lines=outputs)
        return Scored(scored, parsed if items is not None else None, records=outputs)

    def _payloads(
        self, batch: list[Item], header: list[str] | None, errors: list[RecordError]
    ) -> tuple[list[bytes], list[Item], list[Any] | None]:
        if self.raw:
            return [item[1] for item in batch], batch, None
        names = self.client.input_names(self.endpoint) if header is not None else []
        payloads: list[bytes] = []
        kept: list[Item] = []
        items: list[Any] = []
        for item in batch:
            try:
                parsed = parse_record(self.plan, item[1])
                selected = model_input(self.plan, parsed, header, names)
                payloads.append(
                    csv_line(selected) if self.plan.content_type == CSV else _json(selected)
                )
            except (ValueError, KeyError, IndexError, TypeError) as error:
                errors.append(record_error(item, reason_of(error)))
                continue
            kept.append(item)
            items.append(parsed)
        return payloads, kept, items


def _output(answer: bytes | Refusal, as_json: bool, csv_out: bool) -> Any:
    """One record's output from its answer line; ValueError says why there is none."""
    if isinstance(answer, Refusal):
        raise ValueError(f"the endpoint refused the record ({answer.status}): {answer.reason}")
    if not as_json:
        return answer
    try:
        record = json.loads(answer)
    except ValueError:
        raise ValueError(f"the endpoint's answer is not JSON: {answer[:100]!r}") from None
    if not isinstance(record, dict):
        raise ValueError(f"the endpoint's answer is not an object: {answer[:100]!r}")
    if csv_out:
        return ",".join(repr(cell) for cell in _cells(record)).encode()
    return record


def _cells(record: dict[str, Any]) -> list[Any]:
    """A record's outputs, then its contributions per class (each with its bias), as the
    in-worker CSV writes them."""
    cells: list[Any] = []
    for name, value in record.items():
        if name != EXPLANATION:
            cells.extend(value if isinstance(value, list) else [value])
    explanation = record.get(EXPLANATION)
    if isinstance(explanation, dict):
        cells.extend(_contributions(explanation))
    return cells


def _contributions(explanation: dict[str, Any]) -> list[Any]:
    by_feature = explanation.get("feature_contributions")
    bias = explanation.get("bias")
    if isinstance(by_feature, list) and isinstance(bias, list):  # one set per class
        return [v for per, b in zip(by_feature, bias, strict=True) for v in [*per.values(), b]]
    if isinstance(by_feature, dict):
        return [*by_feature.values(), bias]
    raise ValueError("the endpoint's explanation has no feature_contributions")


def _json(selected: Any) -> bytes:
    return json.dumps(selected, default=str, allow_nan=False).encode()


class RemoteColumnScorer:
    """Scores slices of Parquet rows with one invocation each, as JSON Lines."""

    def __init__(self, client: EndpointClient, plan: Plan) -> None:
        assert plan.request.endpoint_name is not None
        self.client = client
        self.endpoint = plan.request.endpoint_name
        self.explain = plan.request.explain

    def score(
        self, selected: pa.Table, first_row: int, errors: list[RecordError]
    ) -> ScoredColumns | None:
        names = self.client.input_names(self.endpoint)
        by_name = set(names) <= set(selected.column_names)
        rows = selected.to_pylist()
        payloads = [
            _json({n: _finite(row[n]) for n in names} if by_name else [*map(_finite, row.values())])
            for row in rows
        ]
        answers = self.client.score_lines(
            self.endpoint,
            payloads,
            content_type=JSONLINES,
            accept=JSONLINES,
            explain=self.explain,
        )
        keep: list[bool] = []
        records: list[dict[str, Any]] = []
        for index, (row, answer) in enumerate(zip(rows, answers, strict=True)):
            try:
                records.append(_output(answer, True, False))
                keep.append(True)
            except ValueError as error:
                record = json.dumps(row, default=str)[:200]
                errors.append(row_error(first_row + index, str(error), record))
                keep.append(False)
        if not records:
            return None
        return ScoredColumns(_columns(records), None if all(keep) else keep)


def _finite(value: Any) -> Any:
    """A missing number (NaN) goes as null: JSON has no NaN, and both mean missing."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _columns(records: list[dict[str, Any]]) -> dict[str, pa.Array]:
    """Output columns from answer records: outputs by name, then `contribution_<label>`."""
    columns: dict[str, pa.Array] = {}
    for name in records[0]:
        if name != EXPLANATION:
            columns[name] = _narrowed(pa.array([record.get(name) for record in records]))
    if EXPLANATION in records[0]:
        explanation = records[0][EXPLANATION]
        by_feature = explanation.get("feature_contributions")
        labels = (
            [*by_feature, "bias"]
            if isinstance(by_feature, dict)
            else [str(i) for i in range(len(_contributions(explanation)))]
        )
        flat = [_contributions(record[EXPLANATION]) for record in records]
        for index, label in enumerate(labels):
            column = pa.array([values[index] for values in flat])
            columns[f"contribution_{label}"] = _narrowed(column)
    return columns


def _narrowed(column: pa.Array) -> pa.Array:
    if not pa.types.is_floating(column.type) or column.null_count:
        return column
    wide = column.to_numpy(zero_copy_only=False)
    narrow = wide.astype(np.float32)
    if np.array_equal(narrow.astype(np.float64), wide, equal_nan=True):
        return pa.array(narrow)
    return column
