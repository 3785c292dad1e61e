"""How a labeling job ends: the sweep, consolidation into a dataset version, its registration.

The sweep repairs each job's queue from the stored answers (a kill between an answer's two writes),
reports progress, and once every item has its answers consolidates them, writes the labels under
`outputs/labeling/<job>/` and asks the ingest service to register them; `DatasetIngested` naming
the output completes the job. A registration left unanswered is requested again (idempotent).
"""

from __future__ import annotations

import asyncio
import logging

from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import DatasetIngested, DatasetRegistrationRequested, DatasetRejected
from cairn.contracts.labeling_events import (
    LabelingJobCompleted,
    LabelingJobFailed,
    LabelingJobProgressed,
)
from cairn.errors import Conflict

from services.labeling.domain import LabelingJob, Queue, counters, job_key, reconcile
from services.labeling.handlers import LabelingHandlers
from services.labeling.output import labels_table, write_labels

log = logging.getLogger("cairn.labeling")


class JobCompletion:
    def __init__(self, handlers: LabelingHandlers) -> None:
        self.handlers = handlers

    async def export(self, job_name: str, *, finish: bool = False) -> LabelingJob:
        """Consolidate the answers so far and register them as a new version of `<job>-labels`."""
        job = await self.handlers.describe(job_name)
        if job.pending_export is not None:
            raise Conflict(f"an export of {job_name!r} is being registered; wait for it")
        result = await self.handlers.consolidated(job)
        queue, items = await self.handlers.queue(job_name), await self.handlers.job_items(job_name)
        machine = {
            item_id: (state.machine_label, state.machine_confidence or 0.0)
            for item_id, state in queue.items.items()
            if state.machine_label is not None
        }
        table = labels_table(items.items, result.labels, machine)
        if table is None:
            raise Conflict(f"labeling job {job_name!r} has no answers to export yet")
        number = len(job.output_versions) + 1
        prefix = await asyncio.to_thread(write_labels, self.handlers.store, job_name, number, table)
        failed = sum(
            1 for i in queue.order if i not in result.labels and i not in machine and queue.done(i)
        )
        tally = counters(queue, failed=failed, final=finish)

        def exporting(current: LabelingJob | None) -> LabelingJob:
            assert current is not None
            return current.model_copy(
                update={
                    "pending_export": prefix,
                    "finish_after_export": finish or current.finish_after_export,
                    "status": "Consolidating" if finish else current.status,
                    "agreement": result.agreement,
                    "counters": tally,
                    "updated_at": utc_now(),
                }
            )

        saved = await asyncio.to_thread(self.handlers.jobs.update, job_key(job_name), exporting)
        await self.handlers.platform.publish(
            DatasetRegistrationRequested(
                dataset_name=job.output_dataset_name, source_uri=prefix, format="parquet"
            )
        )
        return saved.doc

    async def on_dataset_ingested(self, envelope: Envelope[DatasetIngested]) -> None:
        event = envelope.data
        job = await self._job_of_output(event.dataset_name)
        if job is None or job.pending_export is None:
            return

        def registered(current: LabelingJob | None) -> LabelingJob:
            assert current is not None
            versions = current.output_versions
            if event.uri not in versions:
                versions = [*versions, event.uri]
            finished = current.finish_after_export and current.status == "Consolidating"
            return current.model_copy(
                update={
                    "output_versions": versions,
                    "pending_export": None,
                    "status": "Completed" if finished else current.status,
                    "updated_at": utc_now(),
                }
            )

        saved = await asyncio.to_thread(
            self.handlers.jobs.update, job_key(job.job_name), registered
        )
        if saved.doc.status == "Completed" and job.status == "Consolidating":
            await self.handlers.platform.publish(
                LabelingJobCompleted(
                    job_name=job.job_name,
                    output_dataset_uri=event.uri,
                    label_counters=saved.doc.counters,
                    agreement=saved.doc.agreement.get("krippendorff_alpha"),
                ),
                cause=envelope,
            )

    async def on_dataset_rejected(self, envelope: Envelope[DatasetRejected]) -> None:
        event = envelope.data
        job = await self._job_of_output(event.dataset_name)
        if job is None or job.pending_export is None:
            return
        reason = f"the labels were not registered: {event.reason}"

        def rejected(current: LabelingJob | None) -> LabelingJob:
            assert current is not None
            failed = current.status == "Consolidating"
            return current.model_copy(
                update={
                    "pending_export": None,
                    "status": "Failed" if failed else current.status,
                    "failure_reason": reason,
                    "updated_at": utc_now(),
                }
            )

        saved = await asyncio.to_thread(self.handlers.jobs.update, job_key(job.job_name), rejected)
        if saved.doc.status == "Failed" and job.status == "Consolidating":
            await self.handlers.platform.publish(
                LabelingJobFailed(job_name=job.job_name, reason=reason), cause=envelope
            )

    async def _job_of_output(self, dataset_name: str) -> LabelingJob | None:
        if not dataset_name.endswith("-labels"):
            return None
        found = await asyncio.to_thread(
            self.handlers.jobs.get_or_none, job_key(dataset_name.removesuffix("-labels"))
        )
        return None if found is None else found.doc

    # The sweep -------------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # the next sweep tries again; the state is in the store
                log.exception("labeling sweep failed")
            await asyncio.sleep(self.handlers.settings.sweep_interval_s)

    async def sweep(self) -> None:
        for job in await self.handlers.list_jobs():
            if job.status == "InProgress" and job.pending_export is None:
                await self.advance(job)
            elif job.pending_export is not None:
                await self._register_again(job)

    async def _register_again(self, job: LabelingJob) -> None:
        """A registration request lost with a killed service (or unanswered) is sent again."""
        waited_s = (utc_now() - job.updated_at).total_seconds()
        if job.pending_export is None or waited_s < self.handlers.settings.register_again_after_s:
            return

        def touched(current: LabelingJob | None) -> LabelingJob:
            assert current is not None
            return current.model_copy(update={"updated_at": utc_now()})

        await asyncio.to_thread(self.handlers.jobs.update, job_key(job.job_name), touched)
        await self.handlers.platform.publish(
            DatasetRegistrationRequested(
                dataset_name=job.output_dataset_name,
                source_uri=job.pending_export,
                format="parquet",
            )
        )

    async def advance(self, job: LabelingJob) -> None:
        """Repair the queue from stored annotations, report progress, finish a complete job."""
        name = job.job_name
        keys = await asyncio.to_thread(self.handlers.annotations.keys, f"{name}/annotations/")
        answered: dict[str, set[str]] = {}
        for key in keys:
            parts = key.split("/")
            answered.setdefault(parts[2], set()).add(parts[3].removesuffix(".json"))
        saved = await asyncio.to_thread(
            self.handlers.queues.update,
            job_key(name, "queue.json"),
            lambda current: reconcile(current, answered),  # type: ignore[arg-type]
        )
        queue = saved.doc
        done, total = queue.items_done(), len(queue.order)
        step = max(1, total // 10)
        if done >= job.progress_reported + step or (done == total and done > job.progress_reported):
            await self._progress(job, queue)
        if queue.complete():
            await self.export(name, finish=True)

    async def _progress(self, job: LabelingJob, queue: Queue) -> None:
        done = queue.items_done()

        def progressed(current: LabelingJob | None) -> LabelingJob:
            assert current is not None
            return current.model_copy(
                update={
                    "progress_reported": done,
                    "items_done": done,
                    "annotations": queue.annotations(),
                    "counters": counters(queue),
                    "updated_at": utc_now(),
                }
            )

        await asyncio.to_thread(self.handlers.jobs.update, job_key(job.job_name), progressed)
        await self.handlers.platform.publish(
            LabelingJobProgressed(
                job_name=job.job_name,
                items_done=done,
                items_total=len(queue.order),
                annotations=queue.annotations(),
            )
        )
