"""Transforming one shard of Parquet rows: select columns, mini-batch, score, join, write.

Rows are records of named columns; filters select columns. The output is Parquet (the inputs'
columns when joined, then the model's outputs and contributions), or CSV / JSON Lines rows.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from cairn.artifacts import LoadedModel
from cairn.errors import CairnError
from cairn.inference import encode_items, encode_table, split_outputs

from services.batch.domain import CSV, PARQUET
from services.batch.jsonpath import JsonPath
from services.batch.transform import MB, RecordError
from services.batch.validation import Plan


class ParquetTransformer:
    """Transforms Parquet row groups of one job with one loaded model."""

    def __init__(self, model: LoadedModel, plan: Plan) -> None:
        self.model = model
        self.plan = plan
        self.request = plan.request

    def run(self, table: pa.Table, first_row: int) -> tuple[bytes, int, list[RecordError]]:
        """The shard's output body, the rows written and the failed rows."""
        slices = self._slices(table)
        outputs: list[pa.Table] = []
        errors: list[RecordError] = []
        workers = self.request.max_concurrent_transforms
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cairn-batch") as pool:
            for out, failed in pool.map(lambda s: self._slice(table, s, first_row), slices):
                if out is not None:
                    outputs.append(out)
                errors.extend(failed)
        rows = sum(out.num_rows for out in outputs)
        return self._write(outputs), rows, errors

    def _slices(self, table: pa.Table) -> list[tuple[int, int]]:
        if self.request.batch_strategy == "SingleRecord":
            step = 1
        elif self.request.max_payload_mb == 0 or table.num_rows == 0:
            step = max(table.num_rows, 1)
        else:
            per_row = max(table.nbytes / table.num_rows, 1.0)
            step = max(int(self.request.max_payload_mb * MB / per_row), 1)
        total = table.num_rows
        return [(start, min(step, total - start)) for start in range(0, total, step)]

    def _slice(
        self, table: pa.Table, where: tuple[int, int], first_row: int
    ) -> tuple[pa.Table | None, list[RecordError]]:
        rows = table.slice(*where)
        errors: list[RecordError] = []
        try:
            selected = _columns(rows, self.plan.input_filter)
        except KeyError as error:
            reason = f"input_filter: no column {error.args[0]!r}"
            return None, [_error(where[0] + first_row + i, reason) for i in range(rows.num_rows)]
        try:
            matrix = self._encode(selected)
        except CairnError:
            keep, matrix = self._encode_one_by_one(selected, where[0] + first_row, errors)
            rows = rows.filter(pa.array(keep, type=pa.bool_()))
        if rows.num_rows == 0:
            return None, errors
        try:
            output = self.model.predict(matrix)
            contributions = self.model.explain(matrix) if self.request.explain else None
        except (CairnError, ValueError, NotImplementedError) as error:
            for index in range(rows.num_rows):
                errors.append(_error(where[0] + first_row + index, f"scoring failed: {error}"))
            return None, errors
        try:
            return self._joined(rows, output, contributions), errors
        except KeyError as error:
            reason = f"output_filter: no column {error.args[0]!r}"
            return None, [_error(where[0] + first_row + i, reason) for i in range(rows.num_rows)]

    def _encode(self, selected: pa.Table) -> npt.NDArray[np.float32]:
        by_name = set(self.model.input_names) <= set(selected.column_names)
        if by_name:
            selected = selected.select(self.model.input_names)
        return encode_table(self.model, selected, by_name=by_name)

    def _encode_one_by_one(
        self, selected: pa.Table, first_row: int, errors: list[RecordError]
    ) -> tuple[list[bool], npt.NDArray[np.float32]]:
        keep: list[bool] = []
        encoded: list[npt.NDArray[np.float32]] = []
        by_name = set(self.model.input_names) <= set(selected.column_names)
        for index, record in enumerate(selected.to_pylist()):
            item = (
                {n: record[n] for n in self.model.input_names} if by_name else list(record.values())
            )
            try:
                encoded.append(encode_items(self.model, [item]))
                keep.append(True)
            except CairnError as error:
                errors.append(_error(first_row + index, error.message, json.dumps(record)[:200]))
                keep.append(False)
        matrix = np.vstack(encoded) if encoded else np.empty((0, self.model.n_inputs), np.float32)
        return keep, matrix

    def _joined(
        self, rows: pa.Table, output: npt.NDArray[Any], contributions: npt.NDArray[Any] | None
    ) -> pa.Table:
        columns: dict[str, pa.Array] = {}
        for name, values in split_outputs(np.asarray(output), self.model.output_names):
            columns[name] = pa.array(values.tolist() if values.ndim > 1 else values)
        if contributions is not None:
            flat = np.asarray(contributions).reshape(rows.num_rows, -1)
            names = [*self.model.input_names, "bias"]
            if flat.shape[1] != len(names):  # one row of contributions per class
                names = [str(index) for index in range(flat.shape[1])]
            for index, label in enumerate(names):
                columns[f"contribution_{label}"] = pa.array(flat[:, index])
        out = pa.table(columns)
        if self.plan.join:
            for name in reversed(rows.column_names):
                if name not in out.column_names:
                    out = out.add_column(0, name, rows.column(name))
        return _columns(out, self.plan.output_filter)

    def _write(self, outputs: list[pa.Table]) -> bytes:
        if not outputs:
            return b""
        table = pa.concat_tables(outputs, promote_options="default")
        sink = io.BytesIO()
        if self.plan.accept == PARQUET:
            pq.write_table(table, sink)
        elif self.plan.accept == CSV:
            pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
        else:
            for record in table.to_pylist():
                sink.write(json.dumps(record).encode() + b"\n")
        return sink.getvalue()


def _columns(table: pa.Table, path: JsonPath) -> pa.Table:
    """The columns a Parquet filter selects ($, $.name or $['a','b'])."""
    if path.is_identity:
        return table
    names = list(path.steps[0].names)
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise KeyError(missing[0])
    return table.select(names)


def _error(row: int, reason: str, record: str = "") -> RecordError:
    return RecordError(position={"row": row}, reason=reason, record=record)
