"""Transforming one shard of CSV / JSON Lines / text lines: mini-batch, score, join, filter, format.

Records are grouped into mini-batches (one per record for SingleRecord, up to MaxPayloadInMB for
MultiRecord) and each batch goes to a scorer: the model loaded in the worker
(`scoring.LocalTextScorer`) or a live endpoint through the gateway (`remote.RemoteTextScorer`).
Either answers one output per record it could score, and the failed records with their position
and reason; joining to the input and the output filter are the same for both, so both write the
same bytes for the same records.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from cairn.errors import CairnError
from cairn.inference import CSV

from services.batch.domain import TEXT
from services.batch.records import TextRecords
from services.batch.validation import Plan

MB = 1024 * 1024
Item = tuple[int, bytes, int]  # (index in the shard, the record's line, its byte offset)


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


@dataclass(frozen=True)
class Scored:
    """The records of a mini-batch that were scored, in order, and the output of each.

    `csv_lines` (Accept CSV: the output cells of each record as one line) or `records` (an
    object per record: the outputs by name, plus `explanation`). `items` are the parsed
    records when scoring parsed them, so a JSON join need not parse them again.
    """

    batch: list[Item]
    items: list[Any] | None = None
    csv_lines: list[bytes] | None = None
    records: list[Any] | None = None


class TextScorer(Protocol):
    """Scores a mini-batch; a record that cannot be scored is added to `errors` instead."""

    def score(
        self, batch: list[Item], header: list[str] | None, errors: list[RecordError]
    ) -> Scored | None: ...


class TextTransformer:
    """Transforms CSV / JSON Lines records of one job with one scorer."""

    def __init__(self, scorer: TextScorer, plan: Plan) -> None:
        self.scorer = scorer
        self.plan = plan
        self.request = plan.request
        self.payload_limit = self.request.max_payload_mb * MB

    def run(self, records: TextRecords) -> BatchResult:
        """Every record of a shard: its output lines in input order and the failures.

        A scorer that cannot go on (the gateway stays unreachable) raises: batches not started
        yet are cancelled and the shard fails, to be redone.
        """
        batches = self._mini_batches(records)
        workers = self.request.max_concurrent_transforms
        result = BatchResult(records_in=len(records.lines))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cairn-batch")
        try:
            for part in pool.map(lambda b: self._batch(b, records.header), batches):
                result.lines.extend(part.lines)
                result.errors.extend(part.errors)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return result

    def _mini_batches(self, records: TextRecords) -> list[list[Item]]:
        """(index, line, offset) groups within MaxPayloadInMB; oversized records stand alone."""
        batches: list[list[Item]] = []
        current: list[Item] = []
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

    def _batch(self, batch: list[Item], header: list[str] | None) -> BatchResult:
        result = BatchResult()
        if self.payload_limit:
            keep = []
            for item in batch:
                if len(item[1]) > self.payload_limit:
                    reason = (
                        f"record is {len(item[1])} bytes, over MaxPayloadInMB "
                        f"{self.request.max_payload_mb}"
                    )
                    result.errors.append(record_error(item, reason))
                else:
                    keep.append(item)
            batch = keep
        if not batch:
            return result
        scored = self.scorer.score(batch, header, result.errors)
        if scored is None or not scored.batch:
            return result
        if scored.csv_lines is not None:
            result.lines = self._format_csv(scored.batch, scored.csv_lines, result.errors)
        else:
            assert scored.records is not None, "a scorer answers CSV lines or records"
            result.lines = self._format(scored, scored.records, result.errors)
        return result

    # Output ----------------------------------------------------------------------------------

    def _format(self, scored: Scored, records: list[Any], errors: list[RecordError]) -> list[bytes]:
        items = scored.items
        if items is None and self.plan.join:
            items = [parse_record(self.plan, item[1]) for item in scored.batch]
        lines: list[bytes] = []
        for position, (item, record) in enumerate(zip(scored.batch, records, strict=True)):
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
        self, batch: list[Item], produced: list[bytes], errors: list[RecordError]
    ) -> list[bytes]:
        if not self.plan.join and self.plan.output_filter.is_identity:
            return produced
        if self.plan.output_filter.is_identity:
            return [item[1] + b"," + line for item, line in zip(batch, produced, strict=True)]
        lines: list[bytes] = []
        for item, line in zip(batch, produced, strict=True):
            cells = line.decode().split(",")
            row = (next(csv.reader([item[1].decode()])) + cells) if self.plan.join else cells
            self._emit(item, row, csv_line, lines, errors)
        return lines

    def _emit(
        self,
        item: Item,
        value: Any,
        encode: Callable[[Any], bytes],
        lines: list[bytes],
        errors: list[RecordError],
    ) -> None:
        try:
            lines.append(encode(self.plan.output_filter.select(value)))
        except (KeyError, IndexError, TypeError) as error:
            errors.append(record_error(item, f"output_filter: {reason_of(error)}"))


def parse_record(plan: Plan, line: bytes) -> Any:
    """A CSV record as its row of cells, a JSON Lines record as its value, a text line as is."""
    text = line.decode()
    if plan.content_type == CSV:
        return next(csv.reader([text]))
    if plan.content_type == TEXT:
        return text.strip()
    return json.loads(text)


def record_error(item: Item, reason: str) -> RecordError:
    index, line, offset = item
    return RecordError(
        position={"byte_offset": offset, "record_in_shard": index},
        reason=reason,
        record=line[:200].decode(errors="replace"),
    )


def csv_line(value: Any) -> bytes:
    cells: Sequence[Any] = value if isinstance(value, list) else [value]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue().encode()


def reason_of(error: BaseException) -> str:
    if isinstance(error, CairnError):
        return error.message
    if isinstance(error, KeyError):
        return f"no key {error.args[0]!r}"
    return str(error) or type(error).__name__
