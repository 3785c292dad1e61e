"""The assembler: shards' counts into the job, the failure limit, and the outputs assembled.

Every `TransformShardCompleted` adds its shard's counts to the job (by shard index, so a shard
announced twice counts once). Past the failure limit the job ends `Failed`; when every shard is
done, the parts are concatenated into one `<input>.out` per input file, the manifest is written
and `TransformJobCompleted` published.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cairn.contracts.batch_events import (
    TransformJobCompleted,
    TransformJobFailed,
    TransformShardCompleted,
)
from cairn.contracts.envelope import Envelope, utc_now
from cairn.documents import DocumentStore
from cairn.errors import NotFound
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.batch.domain import (
    JOBS_PREFIX,
    Shard,
    ShardCounts,
    TransformJob,
    job_key,
    too_many_failures,
)
from services.batch.planning import assemble
from services.batch.validation import checked


class Assembler:
    """Counts shards in and ends jobs: completed and assembled, or failed past the limit."""

    def __init__(self, store: ObjectStore, platform: Platform) -> None:
        self.store = store
        self.platform = platform
        self.jobs: DocumentStore[TransformJob] = DocumentStore(store, TransformJob, JOBS_PREFIX)
        self.shards: DocumentStore[Shard] = DocumentStore(store, Shard, JOBS_PREFIX)

    async def on_shard_completed(self, envelope: Envelope[TransformShardCompleted]) -> None:
        """Count the shard in; fail past the failure limit; assemble when every shard is done."""
        done = envelope.data
        counts = ShardCounts(
            records_in=done.records_in,
            records_out=done.records_out,
            records_failed=done.records_failed,
        )

        def counted(current: TransformJob | None) -> TransformJob:
            if current is None:
                raise NotFound(f"no transform job {done.job_name!r}")
            if current.status == "Completed":
                return current
            return current.model_copy(
                update={"done": current.done | {str(done.shard_index): counts}}
            )

        try:
            job = (await asyncio.to_thread(self.jobs.update, job_key(done.job_name), counted)).doc
        except NotFound:
            await self.platform.dead_letter(envelope, "no such transform job")
            return
        await self.maybe_finish(job, envelope)

    async def maybe_finish(self, job: TransformJob, cause: Envelope[Any]) -> None:
        if job.status != "InProgress":
            return
        if too_many_failures(job, final=False):
            await self._fail_for_records(job, cause)
            return
        if len(job.done) < job.shards_total:
            return
        if too_many_failures(job, final=True):
            await self._fail_for_records(job, cause)
            return
        plan = checked(job.request, self.store)
        stored = await asyncio.to_thread(self.shards.list, f"{job.job_name}/shards/")
        shards = [versioned.doc for versioned in stored]
        manifest = await asyncio.to_thread(assemble, self.store, job, plan, shards)
        job = await self._end(job.job_name, "Completed", manifest_key=manifest)
        totals = job.totals()
        elapsed = (job.ended_at or utc_now()) - (job.started_at or job.created_at)
        event = TransformJobCompleted(
            job_name=job.job_name,
            output_path=plan.output_prefix,
            manifest_key=manifest,
            **totals.model_dump(),
            elapsed_s=elapsed.total_seconds(),
        )
        await self.platform.publish(event, cause)

    async def _fail_for_records(self, job: TransformJob, cause: Envelope[Any]) -> None:
        totals = job.totals()
        reason = (
            f"{totals.records_failed} records failed (of {totals.records_in} read), over the "
            f"limit; see {checked(job.request, self.store).output_prefix}/errors/"
        )
        await self._end(
            job.job_name, "Failed", failure_reason=reason, failure_code="too_many_failed_records"
        )
        event = TransformJobFailed(
            job_name=job.job_name,
            reason=reason,
            failure_code="too_many_failed_records",
            records_failed=totals.records_failed,
        )
        await self.platform.publish(event, cause)

    async def _end(self, job_name: str, status: str, **fields: Any) -> TransformJob:
        def ended(current: TransformJob | None) -> TransformJob:
            assert current is not None
            update = {"status": status, "ended_at": utc_now(), **fields}
            return current.model_copy(update=update)

        return (await asyncio.to_thread(self.jobs.update, job_key(job_name), ended)).doc
