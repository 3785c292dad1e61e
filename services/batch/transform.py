"""Transforming one shard of CSV / JSON Lines records: filter, mini-batch, score, join, format.

Each mini-batch is first parsed as a block (pyarrow's CSV reader, vectorised encoding); when that
fails, records are parsed one at a time so only the bad ones fail, each with its position and
reason. Scoring and payloads are the kernel's (`cairn.inference`), the gateway's own code.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
)

from services.batch.records import TextRecords
from services.batch.validation import Plan

MB = 1024 * 1024
_CSV_CONVERT = pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True)


@dataclass(frozen=True)
class RecordError:
    """A record that could not be parsed, filtered or scored, and where it is."""

    position: dict[str, int]
    reason: str
    record: str

    def to_json(self, input_key: str, shard_index: int) -> str:
        return json.dumps(
            {"input": input_key, "shard": shard_index, **self.position}
            | {"reason": self.reason, "record": self.record}
        )


@dataclass
class BatchResult:
    """One mini-batch's output lines (good records, in order) and its failed records."""

    lines: list[bytes] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    records_in: int = 0


class TextTransformer:
    """Transforms CSV / JSON Lines records of one job with one loaded model."""

    def __init__(self, model: LoadedModel, plan: Plan) -> None:
        self.model = model
        self.plan = plan
        self.request = plan.request
        self.payload_limit = self.request.max_payload_mb * MB

    def run(self, records: TextRecords) -> BatchResult:
        """Every record of a shard: its output lines in input order and the failures."""
        batches = list(self._mini_batches(records))
        workers = self.request.max_concurrent_transforms
        result = BatchResult(records_in=len(records.lines))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cairn-batch") as pool:
            for part in pool.map(lambda b: self._batch(b, records.header), batches):
                result.lines.extend(part.lines)
                result.errors.extend(part.errors)
        return result

    def _mini_batches(self, records: TextRecords) -> list[list[tuple[int, bytes, int]]]:
        """(index, line, offset) groups within MaxPayloadInMB; oversized records stand alone."""
        batches: list[list[tuple[int, bytes, int]]] = []
        current: list[tuple[int, bytes, int]] = []
        size = 0
        single = self.request.batch_strategy == "SingleRecord"
        for index, (line, offset) in enumerate(zip(records.lines, records.offsets, strict=True)):
            over = self.payload_limit and size + len(line) + 1 > self.payload_limit
            if current and (single or over):
                batches.append(current)
                current, size = [], 0
            current.append((index, line, offset))
            size += len(line) + 1
        if current:
            batches.append(current)
        return batches

    def _batch(self, batch: list[tuple[int, bytes, int]], header: list[str] | None) -> BatchResult:
        result = BatchResult()
        if self.payload_limit:
            keep = []
            for item in batch:
                if len(item[1]) > self.payload_limit:
                    reason = (
                        f"record is {len(item[1])} bytes, over MaxPayloadInMB "
                        f"{self.request.max_payload_mb}"
                    )
                    result.errors.append(self._error(item, reason))
                else:
                    keep.append(item)
            batch = keep
        if not batch:
            return result
        lines = [item[1] for item in batch]
        matrix = self._block_matrix(lines, header)
        items: list[Any] | None = None
        if matrix is None:
            good, items, matrix = self._encode_one_by_one(batch, header, result.errors)
            batch = [batch[i] for i in good]
        if not batch:
            return result
        scored = self._score(batch, matrix, result.errors)
        if scored is None:
            return result
        output, contributions = scored
        result.lines = self._format(batch, items, output, contributions, result.errors)
        return result

    # Encoding --------------------------------------------------------------------------------

    def _block_matrix(
        self, lines: list[bytes], header: list[str] | None
    ) -> npt.NDArray[np.float32] | None:
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
        self,
        batch: list[tuple[int, bytes, int]],
        header: list[str] | None,
        errors: list[RecordError],
    ) -> tuple[list[int], list[Any], npt.NDArray[np.float32]]:
        good: list[int] = []
        items: list[Any] = []
        rows: list[npt.NDArray[np.float32]] = []
        for position, item in enumerate(batch):
            try:
                parsed = self._parse(item[1])
                rows.append(self._encode(parsed, header))
            except (CairnError, ValueError, KeyError, IndexError, TypeError) as error:
                errors.append(self._error(item, _reason(error)))
                continue
            good.append(position)
            items.append(parsed)
        matrix = np.vstack(rows) if rows else np.empty((0, self.model.n_inputs), np.float32)
        return good, items, matrix

    def _parse(self, line: bytes) -> Any:
        text = line.decode()
        if self.plan.content_type == CSV:
            return next(csv.reader([text]))
        return json.loads(text)

    def _encode(self, parsed: Any, header: list[str] | None) -> npt.NDArray[np.float32]:
        selected = self.plan.input_filter.select(parsed)
        if header is not None and isinstance(selected, list):
            names = self.plan.input_filter.select(header)
            if isinstance(names, list) and set(self.model.input_names) <= set(names):
                selected = [selected[names.index(name)] for name in self.model.input_names]
        if isinstance(selected, dict) and set(selected) == {"features"}:
            selected = selected["features"]
        if not isinstance(selected, list | dict):
            selected = [selected]
        return encode_items(self.model, [selected])

    # Scoring ---------------------------------------------------------------------------------

    def _score(
        self,
        batch: list[tuple[int, bytes, int]],
        matrix: npt.NDArray[np.float32],
        errors: list[RecordError],
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None] | None:
        try:
            output = self.model.predict(matrix)
            contributions = self.model.explain(matrix) if self.request.explain else None
        except (CairnError, ValueError, NotImplementedError) as error:
            errors.extend(self._error(item, f"scoring failed: {_reason(error)}") for item in batch)
            return None
        return output, contributions

    # Output ----------------------------------------------------------------------------------

    def _format(
        self,
        batch: list[tuple[int, bytes, int]],
        items: list[Any] | None,
        output: npt.NDArray[Any],
        contributions: npt.NDArray[Any] | None,
        errors: list[RecordError],
    ) -> list[bytes]:
        if self.plan.accept == CSV:
            return self._format_csv(batch, output, contributions, errors)
        records = prediction_records(output, self.model.output_names)
        if contributions is not None:
            explained = explanation_records(contributions, self.model.input_names)
            records = [r | {"explanation": e} for r, e in zip(records, explained, strict=True)]
        if items is None and self.plan.join:
            items = [self._parse(item[1]) for item in batch]
        lines: list[bytes] = []
        for position, (item, record) in enumerate(zip(batch, records, strict=True)):
            value: Any = record
            if self.plan.join:
                source = items[position] if items is not None else None
                value = (
                    source | {"SageMakerOutput": record}
                    if isinstance(source, dict)
                    else {"SageMakerInput": source, "SageMakerOutput": record}
                )
            self._emit(item, value, lambda v: json.dumps(v).encode(), lines, errors)
        return lines

    def _format_csv(
        self,
        batch: list[tuple[int, bytes, int]],
        output: npt.NDArray[Any],
        contributions: npt.NDArray[Any] | None,
        errors: list[RecordError],
    ) -> list[bytes]:
        table = output.reshape(len(batch), -1)
        if contributions is not None:
            table = np.column_stack([table, contributions.reshape(len(batch), -1)])
        body, _ = format_response(table if table.shape[1] > 1 else table[:, 0], [], CSV)
        produced = body.rstrip(b"\n").split(b"\n")
        if not self.plan.join and self.plan.output_filter.is_identity:
            return produced
        if self.plan.output_filter.is_identity:
            return [item[1] + b"," + line for item, line in zip(batch, produced, strict=True)]
        lines: list[bytes] = []
        for item, line in zip(batch, produced, strict=True):
            cells = line.decode().split(",")
            row = (next(csv.reader([item[1].decode()])) + cells) if self.plan.join else cells
            self._emit(item, row, _csv_line, lines, errors)
        return lines

    def _emit(
        self,
        item: tuple[int, bytes, int],
        value: Any,
        encode: Callable[[Any], bytes],
        lines: list[bytes],
        errors: list[RecordError],
    ) -> None:
        try:
            lines.append(encode(self.plan.output_filter.select(value)))
        except (KeyError, IndexError, TypeError) as error:
            errors.append(self._error(item, f"output_filter: {_reason(error)}"))

    def _error(self, item: tuple[int, bytes, int], reason: str) -> RecordError:
        index, line, offset = item
        return RecordError(
            position={"byte_offset": offset, "record_in_shard": index},
            reason=reason,
            record=line[:200].decode(errors="replace"),
        )


def _csv_line(value: Any) -> bytes:
    cells: Sequence[Any] = value if isinstance(value, list) else [value]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue().encode()


def _reason(error: BaseException) -> str:
    if isinstance(error, CairnError):
        return error.message
    if isinstance(error, KeyError):
        return f"no key {error.args[0]!r}"
    return str(error) or type(error).__name__
