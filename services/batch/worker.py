"""The batch worker: one `TransformShardRequested` -> the shard's output, written once.

Records are scored by the model loaded here (tabular models through `scoring`, the deep
built-ins that take whole bodies through `structured`: JSON Lines, text lines, image files) or
by the job's live endpoint.

A shard is redone from the start when its worker dies; its output object and its errors file are
create-only and the same bytes each time, so a second writer finds them and moves on, and the
shard document turns Done once (a conditional write) with its counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from cairn.contracts.batch_events import TransformShardCompleted, TransformShardRequested
from cairn.contracts.envelope import Envelope, utc_now
from cairn.documents import DocumentStore
from cairn.errors import CairnError, InvalidInput, PreconditionFailed
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.batch.columnar import ColumnScorer, ParquetTransformer
from services.batch.config import BatchSettings
from services.batch.domain import (
    JOBS_PREFIX,
    PARQUET,
    TERMINAL,
    Shard,
    ShardCounts,
    TransformJob,
    errors_key,
    job_key,
    part_key,
    shard_key,
    whole_file,
)
from services.batch.endpoint import EndpointClient
from services.batch.inputs import LocalCopies, Models, open_ranged
from services.batch.records import TextRecords, read_gzip_file, read_row_groups, read_text_shard
from services.batch.remote import RemoteColumnScorer, RemoteTextScorer
from services.batch.scoring import LocalColumnScorer, LocalTextScorer
from services.batch.structured import StructuredTextScorer, is_structured, score_file
from services.batch.transform import RecordError, TextScorer, TextTransformer
from services.batch.validation import Plan, checked

log = logging.getLogger("cairn.batch.worker")


class ShardWorker:
    """Transforms shards: reads only each shard's part of its file, and scores it with the model
    (loaded once per worker process) or the job's live endpoint."""

    def __init__(
        self,
        store: ObjectStore,
        settings: BatchSettings,
        platform: Platform,
        endpoints: EndpointClient,
    ) -> None:
        self.store = store
        self.settings = settings
        self.platform = platform
        self.endpoints = endpoints
        self.jobs: DocumentStore[TransformJob] = DocumentStore(store, TransformJob, JOBS_PREFIX)
        self.shards: DocumentStore[Shard] = DocumentStore(store, Shard, JOBS_PREFIX)
        self.copies = LocalCopies(store, settings.cache_dir, settings.cache_bytes)
        self.models = Models(store, settings.predict_threads)

    async def on_shard(self, envelope: Envelope[TransformShardRequested]) -> None:
        """Transform the shard unless it is done or its job ended; then announce its counts."""
        work = envelope.data
        job = await asyncio.to_thread(self.jobs.get_or_none, job_key(work.job_name))
        shard = await asyncio.to_thread(
            self.shards.get_or_none, shard_key(work.job_name, work.shard_index)
        )
        if job is None or shard is None:
            await self.platform.dead_letter(envelope, "no such transform job or shard")
            return
        if job.doc.status in TERMINAL:
            log.info("job %s is %s: shard %d left", work.job_name, job.doc.status, work.shard_index)
            return
        elapsed = 0.0
        if shard.doc.status != "Done":
            started = time.perf_counter()
            counts = await asyncio.to_thread(self._transform, job.doc, shard.doc)
            elapsed = time.perf_counter() - started
            done = await asyncio.to_thread(self._mark_done, shard.key, counts)
        else:
            done = shard.doc
        event = TransformShardCompleted(
            job_name=work.job_name,
            shard_index=work.shard_index,
            **done.counts.model_dump(),
            elapsed_s=elapsed,
            worker_id=done.worker_id or self.settings.worker_id,
        )
        await self.platform.publish(event, envelope)

    def _transform(self, job: TransformJob, shard: Shard) -> ShardCounts:
        plan = checked(job.request, self.store)
        size = job.input_files[shard.file_index].size
        errors: list[RecordError]
        if whole_file(plan.content_type, shard.input_key):
            body, errors = self._score_file(job, plan, shard)
            records_in, records_out = 1, 1 - len(errors)
        elif plan.content_type == PARQUET:
            with open_ranged(self.store, shard.input_key, size) as source:
                table = read_row_groups(source, shard.row_groups)
            transformer = ParquetTransformer(self._column_scorer(job, plan), plan)
            body, records_out, errors = transformer.run(table, shard.first_row)
            records_in = table.num_rows
        else:
            result = TextTransformer(self._text_scorer(job, plan, shard), plan).run(
                self._records(job, shard, size)
            )
            body = b"".join(line + b"\n" for line in result.lines)
            records_in, records_out, errors = result.records_in, len(result.lines), result.errors
        self._write_once(part_key(job.job_name, shard.index), body)
        if errors:
            relative = job.input_files[shard.file_index].relative
            lines = "".join(e.to_json(shard.input_key, shard.index) + "\n" for e in errors)
            key = errors_key(plan.output_prefix, relative, shard.index)
            self._write_once(key, lines.encode())
        return ShardCounts(
            records_in=records_in, records_out=records_out, records_failed=len(errors)
        )

    def _records(self, job: TransformJob, shard: Shard, size: int) -> TextRecords:
        """The shard's records: its byte range read from the store (a gzip file whole)."""
        header = job.request.transform_input.csv_header
        if job.request.transform_input.compression_type == "Gzip":
            return read_gzip_file(self.copies.path(shard.input_key), header=header)
        with open_ranged(self.store, shard.input_key, size) as handle:
            return read_text_shard(handle, shard.start, shard.end, header=header)

    def _score_file(
        self, job: TransformJob, plan: Plan, shard: Shard
    ) -> tuple[bytes, list[RecordError]]:
        """An image file, one record: the model's answer to it, or the reason it has none."""
        assert job.model_uri is not None, "image inputs are scored with a registered model"
        model = self.models.get(job.model_uri)
        try:
            if not is_structured(model):
                raise InvalidInput(f"{model.manifest.algorithm} takes table rows, not images")
            return score_file(model, plan, self.store.get_bytes(shard.input_key)), []
        except CairnError as error:
            position = {"byte_offset": 0, "record_in_shard": 0}
            return b"", [RecordError(position, error.message, shard.input_key)]

    def _text_scorer(self, job: TransformJob, plan: Plan, shard: Shard) -> TextScorer:
        if job.request.endpoint_name is not None:
            return RemoteTextScorer(self.endpoints, plan)
        assert job.model_uri is not None, "a planned job names its model or endpoint"
        model = self.models.get(job.model_uri)
        if is_structured(model):
            return StructuredTextScorer(model, plan, shard.input_key, self.store.get_bytes)
        return LocalTextScorer(model, plan)

    def _column_scorer(self, job: TransformJob, plan: Plan) -> ColumnScorer:
        if job.request.endpoint_name is not None:
            return RemoteColumnScorer(self.endpoints, plan)
        assert job.model_uri is not None, "a planned job names its model or endpoint"
        return LocalColumnScorer(self.models.get(job.model_uri), plan)

    def _write_once(self, key: str, body: bytes) -> None:
        """A redone shard writes the same bytes: the first copy stands."""
        with contextlib.suppress(PreconditionFailed):
            self.store.put_bytes(key, body, if_none_match=True)

    def _mark_done(self, key: str, counts: ShardCounts) -> Shard:
        worker_id = self.settings.worker_id

        def finish(current: Shard | None) -> Shard:
            assert current is not None, "shard documents are never deleted"
            if current.status == "Done":
                return current
            return current.model_copy(
                update={
                    "status": "Done",
                    "counts": counts,
                    "worker_id": worker_id,
                    "completed_at": utc_now(),
                }
            )

        return self.shards.update(key, finish).doc
