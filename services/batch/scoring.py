"""Scoring with the model loaded in the worker: the kernel's payload code, the gateway's own.

A mini-batch is first encoded as a block (pyarrow's CSV reader, vectorised encoding); when that
fails, records are encoded one at a time so only the bad ones fail, each with its reason.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
from cairn.artifacts import LoadedModel
from cairn.errors import CairnError
from cairn.inference import (
    CSV,
    encode_items,
    encode_table,
    explanation_records,
    format_response,
    prediction_records,
    split_outputs,
)

from services.batch.columnar import ScoredColumns, row_error
from services.batch.transform import (
    Item,
    RecordError,
    Scored,
    parse_record,
    reason_of,
    record_error,
)
from services.batch.validation import Plan

_CSV_CONVERT = pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True)
Matrix = npt.NDArray[np.float32]


class LocalTextScorer:
    """Scores CSV / JSON Lines mini-batches with a loaded model."""

    def __init__(self, model: LoadedModel, plan: Plan) -> None:
        self.model = model
        self.plan = plan
        self.explain = plan.request.explain

    def score(
        self, batch: list[Item], header: list[str] | None, errors: list[RecordError]
    ) -> Scored | None:
        matrix = self._block_matrix([item[1] for item in batch], header)
        items: list[Any] | None = None
        if matrix is None:
            good, items, matrix = self._encode_one_by_one(batch, header, errors)
            batch = [batch[i] for i in good]
        if not batch:
            return None
        try:
            output = self.model.predict(matrix)
            contributions = self.model.explain(matrix) if self.explain else None
        except (CairnError, ValueError, NotImplementedError) as error:
            if len(batch) > 1:  # a model that checks values as it predicts: find the bad ones
                return self._score_one_by_one(batch, header, errors)
            reason = f"scoring failed: {reason_of(error)}"
            errors.extend(record_error(item, reason) for item in batch)
            return None
        if self.plan.accept == CSV:
            table = output.reshape(len(batch), -1)
            if contributions is not None:
                table = np.column_stack([table, contributions.reshape(len(batch), -1)])
            body, _ = format_response(table if table.shape[1] > 1 else table[:, 0], [], CSV)
            return Scored(batch, items, csv_lines=body.rstrip(b"\n").split(b"\n"))
        records = prediction_records(output, self.model.output_names)
        if contributions is not None:
            explained = explanation_records(contributions, self.model.input_names)
            records = [r | {"explanation": e} for r, e in zip(records, explained, strict=True)]
        return Scored(batch, items, records=records)

    def _score_one_by_one(
        self, batch: list[Item], header: list[str] | None, errors: list[RecordError]
    ) -> Scored | None:
        """Each record alone, so only those the model refuses fail (IP Insights checks each
        address as it predicts)."""
        parts = [part for item in batch if (part := self.score([item], header, errors))]
        if not parts:
            return None
        items = [i for p in parts for i in p.items or []] if all(p.items for p in parts) else None
        if self.plan.accept == CSV:
            lines = [line for p in parts for line in p.csv_lines or []]
            return Scored([i for p in parts for i in p.batch], items, csv_lines=lines)
        records = [record for p in parts for record in p.records or []]
        return Scored([i for p in parts for i in p.batch], items, records=records)

    def _block_matrix(self, lines: list[bytes], header: list[str] | None) -> Matrix | None:
        """The mini-batch's matrix parsed in one go (CSV only), or None to go record by record."""
        if self.plan.content_type != CSV:
            return None
        try:
            options = pacsv.ReadOptions(
                column_names=header, autogenerate_column_names=header is None, use_threads=False
            )
            table = pacsv.read_csv(
                io.BytesIO(b"\n".join(lines)), read_options=options, convert_options=_CSV_CONVERT
            )
            if table.num_rows != len(lines):
                return None
            indexes = self.plan.input_filter.column_indexes(table.num_columns)
            if indexes is None:
                return None
            table = table.select(indexes)
            by_name = header is not None and set(self.model.input_names) <= set(table.column_names)
            return encode_table(self.model, table, by_name=by_name)
        except (pa.ArrowInvalid, CairnError, IndexError):
            return None

    def _encode_one_by_one(
        self, batch: list[Item], header: list[str] | None, errors: list[RecordError]
    ) -> tuple[list[int], list[Any], Matrix]:
        good: list[int] = []
        items: list[Any] = []
        rows: list[Matrix] = []
        for position, item in enumerate(batch):
            try:
                parsed = parse_record(self.plan, item[1])
                selected = model_input(self.plan, parsed, header, self.model.input_names)
                rows.append(encode_items(self.model, [selected]))
            except (CairnError, ValueError, KeyError, IndexError, TypeError) as error:
                errors.append(record_error(item, reason_of(error)))
                continue
            good.append(position)
            items.append(parsed)
        matrix = np.vstack(rows) if rows else np.empty((0, self.model.n_inputs), np.float32)
        return good, items, matrix


def model_input(plan: Plan, parsed: Any, header: list[str] | None, input_names: list[str]) -> Any:
    """What the model sees of a record: the input filter's selection; a CSV row with a header
    naming the model's columns is put in the model's column order; `{"features": [...]}` is
    the row it wraps, a one-key object the value of a one-input model, a lone value a row of
    one."""
    selected = plan.input_filter.select(parsed)
    if header is not None and isinstance(selected, list):
        names = plan.input_filter.select(header)
        if isinstance(names, list) and set(input_names) <= set(names):
            selected = [selected[names.index(name)] for name in input_names]
    if isinstance(selected, dict) and set(selected) == {"features"}:
        selected = selected["features"]
    if isinstance(selected, dict) and len(selected) == 1 and len(input_names) == 1:
        selected = list(selected.values())  # BlazingText's {"source": "..."}, whatever its name
    if not isinstance(selected, list | dict):
        selected = [selected]
    return selected


class LocalColumnScorer:
    """Scores slices of Parquet rows with a loaded model, by column name when the names fit."""

    def __init__(self, model: LoadedModel, plan: Plan) -> None:
        self.model = model
        self.explain = plan.request.explain

    def score(
        self, selected: pa.Table, first_row: int, errors: list[RecordError]
    ) -> ScoredColumns | None:
        keep: list[bool] | None = None
        try:
            matrix = self._encode(selected)
        except CairnError:
            keep, matrix = self._encode_one_by_one(selected, first_row, errors)
        rows = [index for index in range(selected.num_rows) if keep is None or keep[index]]
        if not rows:
            return None
        try:
            output = self.model.predict(matrix)
            contributions = self.model.explain(matrix) if self.explain else None
        except (CairnError, ValueError, NotImplementedError) as error:
            errors.extend(row_error(first_row + i, f"scoring failed: {error}") for i in rows)
            return None
        columns = output_columns(output, contributions, self.model, len(rows))
        return ScoredColumns(columns, keep)

    def _encode(self, selected: pa.Table) -> Matrix:
        by_name = set(self.model.input_names) <= set(selected.column_names)
        if by_name:
            selected = selected.select(self.model.input_names)
        return encode_table(self.model, selected, by_name=by_name)

    def _encode_one_by_one(
        self, selected: pa.Table, first_row: int, errors: list[RecordError]
    ) -> tuple[list[bool], Matrix]:
        keep: list[bool] = []
        encoded: list[Matrix] = []
        by_name = set(self.model.input_names) <= set(selected.column_names)
        for index, record in enumerate(selected.to_pylist()):
            item = (
                {n: record[n] for n in self.model.input_names} if by_name else list(record.values())
            )
            try:
                encoded.append(encode_items(self.model, [item]))
                keep.append(True)
            except CairnError as error:
                errors.append(row_error(first_row + index, error.message, json.dumps(record)[:200]))
                keep.append(False)
        matrix = np.vstack(encoded) if encoded else np.empty((0, self.model.n_inputs), np.float32)
        return keep, matrix


def output_columns(
    output: npt.NDArray[Any],
    contributions: npt.NDArray[Any] | None,
    model: LoadedModel,
    rows: int,
) -> dict[str, pa.Array]:
    """The model's outputs by name, then `contribution_<feature>` (and `_bias`) columns."""
    columns: dict[str, pa.Array] = {}
    for name, values in split_outputs(np.asarray(output), model.output_names):
        columns[name] = pa.array(values.tolist() if values.ndim > 1 else values)
    if contributions is not None:
        flat = np.asarray(contributions).reshape(rows, -1)
        names = [*model.input_names, "bias"]
        if flat.shape[1] != len(names):  # one row of contributions per class
            names = [str(index) for index in range(flat.shape[1])]
        for index, label in enumerate(names):
            columns[f"contribution_{label}"] = pa.array(flat[:, index])
    return columns
