"""Transforming one shard of Parquet rows: select columns, mini-batch, score, join, write.

Rows are records of named columns; filters select columns. A scorer (the loaded model or a live
endpoint) turns the selected columns of a slice of rows into output columns (the model's outputs,
then contributions); the output is Parquet (the inputs' columns when joined, then those), or CSV /
JSON Lines rows.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from services.batch.domain import CSV, PARQUET
from services.batch.jsonpath import JsonPath
from services.batch.transform import MB, RecordError
from services.batch.validation import Plan


@dataclass(frozen=True)
class ScoredColumns:
    """The output columns of the rows that were scored; `keep` marks them when some failed."""

    columns: dict[str, pa.Array]
    keep: list[bool] | None = None


class ColumnScorer(Protocol):
    """Scores a slice of rows (the columns the input filter selected); failures go to `errors`,
    each with its file row number (`first_row` is the slice's)."""

    def score(
        self, selected: pa.Table, first_row: int, errors: list[RecordError]
    ) -> ScoredColumns | None: ...


class ParquetTransformer:
    """Transforms Parquet row groups of one job with one scorer."""

    def __init__(self, scorer: ColumnScorer, plan: Plan) -> None:
        self.scorer = scorer
        self.plan = plan
        self.request = plan.request

    def run(self, table: pa.Table, first_row: int) -> tuple[bytes, int, list[RecordError]]:
        """The shard's output body, the rows written and the failed rows."""
        slices = self._slices(table)
        outputs: list[pa.Table] = []
        errors: list[RecordError] = []
        workers = self.request.max_concurrent_transforms
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cairn-batch")
        try:
            for out, failed in pool.map(lambda s: self._slice(table, s, first_row), slices):
                if out is not None:
                    outputs.append(out)
                errors.extend(failed)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
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
        start = where[0] + first_row
        errors: list[RecordError] = []
        try:
            selected = columns_of(rows, self.plan.input_filter)
        except KeyError as error:
            reason = f"input_filter: no column {error.args[0]!r}"
            return None, [row_error(start + i, reason) for i in range(rows.num_rows)]
        scored = self.scorer.score(selected, start, errors)
        if scored is None:
            return None, errors
        if scored.keep is not None:
            rows = rows.filter(pa.array(scored.keep, type=pa.bool_()))
        if rows.num_rows == 0:
            return None, errors
        try:
            return self._joined(rows, scored.columns), errors
        except KeyError as error:
            reason = f"output_filter: no column {error.args[0]!r}"
            return None, [row_error(start + i, reason) for i in range(rows.num_rows)]

    def _joined(self, rows: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
        out = pa.table(columns)
        if self.plan.join:
            for name in reversed(rows.column_names):
                if name not in out.column_names:
                    out = out.add_column(0, name, rows.column(name))
        return columns_of(out, self.plan.output_filter)

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


def columns_of(table: pa.Table, path: JsonPath) -> pa.Table:
    """The columns a Parquet filter selects ($, $.name or $['a','b'])."""
    if path.is_identity:
        return table
    names = list(path.steps[0].names)
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise KeyError(missing[0])
    return table.select(names)


def row_error(row: int, reason: str, record: str = "") -> RecordError:
    return RecordError(position={"row": row}, reason=reason, record=record)
