"""The batch worker: one `TransformShardRequested` -> the shard's output, written once.

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
from cairn.errors import PreconditionFailed
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.batch.columnar import ParquetTransformer
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
)
from services.batch.inputs import LocalCopies, Models
from services.batch.records import read_row_groups, read_text_file_shard
from services.batch.transform import RecordError, TextTransformer
from services.batch.validation import checked

log = logging.getLogger("cairn.batch.worker")


class ShardWorker:
    """Transforms shards; models and input files are loaded once per worker process."""

    def __init__(self, store: ObjectStore, settings: BatchSettings, platform: Platform) -> None:
        self.store = store
        self.settings = settings
        self.platform = platform
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
        assert job.model_uri is not None, "a planned job names its model"
        model = self.models.get(job.model_uri)
        path = self.copies.path(shard.input_key)
        errors: list[RecordError]
        if plan.content_type == PARQUET:
            table = read_row_groups(path, shard.row_groups)
            body, records_out, errors = ParquetTransformer(model, plan).run(table, shard.first_row)
            records_in = table.num_rows
        else:
            records = read_text_file_shard(
                path,
                shard.start,
                shard.end,
                header=job.request.transform_input.csv_header,
                gzipped=job.request.transform_input.compression_type == "Gzip",
            )
            result = TextTransformer(model, plan).run(records)
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
