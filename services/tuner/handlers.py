"""The tuner's service layer: create, describe, list and stop tuning jobs; follow their trials."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cairn.auth import Principal
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    TrainingJobCompleted,
    TrainingJobFailed,
    TrainingJobProgressed,
)
from cairn.contracts.tuner_events import (
    HyperParameterTuningJobFailed,
    HyperParameterTuningJobRequested,
    TrainingJobStopped,
)
from cairn.documents import DocumentStore
from cairn.errors import CairnError, Conflict, InvalidInput, NotFound, PreconditionFailed
from cairn.namespaces import confine, confine_channel
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.tuner.config import TunerSettings
from services.tuner.domain import (
    JOBS_PREFIX,
    TERMINAL_TUNING,
    TuningJob,
    job_key,
    max_trials,
    parse_trial_name,
    validate_request,
)
from services.tuner.engine import TuningEngine, ending_job
from services.tuner.trials import TrialOutcome, record_outcome, record_progress
from services.tuner.warmstart import resolve_warm_start

log = logging.getLogger(__name__)

CREATE_ACTION = "tuning_job.create"
STOP_ACTION = "tuning_job.stop"


@dataclass(frozen=True)
class CreatedTuningJob:
    job: TuningJob
    envelope: Envelope[Any]


class TunerHandlers:
    """Tuning jobs with CreateHyperParameterTuningJob semantics, trials run by the trainer."""

    def __init__(self, store: ObjectStore, settings: TunerSettings, platform: Platform) -> None:
        self.store = store
        self.settings = settings
        self.platform = platform
        self.jobs: DocumentStore[TuningJob] = DocumentStore(store, TuningJob, JOBS_PREFIX)
        self.engine = TuningEngine(self.jobs, platform.publish)

    # Commands ------------------------------------------------------------------------------

    async def create(self, request: HyperParameterTuningJobRequested) -> CreatedTuningJob:
        """Validate everything, store the job, then publish the request that runs it.

        Raises:
            InvalidInput: bad input, naming the field (nothing is stored).
            Conflict: the name is taken.
        """
        job = await asyncio.to_thread(self._prepare, request, None)
        try:
            await asyncio.to_thread(self.jobs.create, job_key(job.tuning_job_name), job)
        except PreconditionFailed:
            raise Conflict(f"tuning job {request.tuning_job_name!r} already exists") from None
        envelope = await self.platform.publish(job.request, None, job.correlation_id)
        return CreatedTuningJob(job, envelope)

    def _prepare(
        self, request: HyperParameterTuningJobRequested, correlation_id: str | None
    ) -> TuningJob:
        """The job document for a valid request (warm start resolved, seed fixed)."""
        request = confined(request, self.store)
        validate_request(request)
        seeds = resolve_warm_start(self.store, self.jobs, request)
        seed = request.random_seed
        return TuningJob(
            tuning_job_name=request.tuning_job_name,
            request=request,
            seed=seed if seed is not None else random.randrange(2**31 - 1),
            max_trials=max_trials(request),
            warm_start_trials=seeds,
            correlation_id=correlation_id or f"tuning-{request.tuning_job_name}",
        )

    async def describe(self, name: str) -> TuningJob:
        versioned = await asyncio.to_thread(self.jobs.get_or_none, job_key(name))
        if versioned is None:
            raise NotFound(f"no tuning job {name!r}")
        return versioned.doc

    async def list_jobs(self) -> list[TuningJob]:
        return await asyncio.to_thread(self.jobs.top_level)

    async def stop(self, name: str, reason: str) -> TuningJob:
        """StopHyperParameterTuningJob: no new trial; running trials are stopped.

        Raises:
            NotFound: no such job.  Conflict: it already ended.
        """

        def stopping(current: TuningJob | None) -> TuningJob:
            if current is None:
                raise NotFound(f"no tuning job {name!r}")
            if current.status in TERMINAL_TUNING:
                raise Conflict(f"tuning job {name!r} already {current.status}")
            if current.end_as is not None:
                return current
            return ending_job(current, "Stopped", reason)

        await asyncio.to_thread(self.jobs.update, job_key(name), stopping)
        return await self.engine.advance(name) or await self.describe(name)

    # Events --------------------------------------------------------------------------------

    async def on_requested(self, envelope: Envelope[HyperParameterTuningJobRequested]) -> None:
        """Start (or resume) the job; a bad request fails the job and is dead-lettered."""
        request = envelope.data
        name = request.tuning_job_name
        existing = await asyncio.to_thread(self.jobs.get_or_none, job_key(name))
        if existing is None:
            try:
                job = await asyncio.to_thread(self._prepare, request, envelope.correlation_id)
            except InvalidInput as error:
                await self._refuse(envelope, error.message)
                return
            try:
                await asyncio.to_thread(self.jobs.create, job_key(name), job)
                await self._audit_created(envelope)
            except PreconditionFailed:
                pass  # created meanwhile by another delivery: just advance it
        elif confined(request, self.store) != existing.doc.request:
            await self.platform.dead_letter(
                envelope, f"tuning job {name!r} exists with another definition"
            )
            return
        await self.engine.advance(name)

    async def _refuse(self, envelope: Envelope[HyperParameterTuningJobRequested], why: str) -> None:
        log.warning("refusing tuning request %s: %s", envelope.event_id, why)
        failed = HyperParameterTuningJobFailed(
            tuning_job_name=envelope.data.tuning_job_name, reason=why
        )
        await self.platform.publish(failed, envelope)
        await self.platform.dead_letter(envelope, why, error="InvalidInput")

    async def _audit_created(self, envelope: Envelope[HyperParameterTuningJobRequested]) -> None:
        principal: Principal | str
        try:
            principal = await self.platform.principal_of(envelope)
        except CairnError:
            principal = f"unverified:{envelope.source}"
        await self.platform.audit(
            action=CREATE_ACTION,
            resource=f"/tuning-jobs/{envelope.data.tuning_job_name}",
            principal=principal,
            correlation_id=envelope.correlation_id,
            details={"event_id": str(envelope.event_id), "via": "bus"},
        )

    async def on_progress(self, envelope: Envelope[TrainingJobProgressed]) -> None:
        """A trial's intermediate objective: recorded, and the pruner asked about it."""
        if await self._apply(envelope.data.job_name, envelope.data, record_progress):
            await self._advance_for(envelope.data.job_name)

    async def on_completed(self, envelope: Envelope[TrainingJobCompleted]) -> None:
        await self._ended(envelope.data.job_name, envelope.data)

    async def on_failed(self, envelope: Envelope[TrainingJobFailed]) -> None:
        await self._ended(envelope.data.job_name, envelope.data)

    async def on_stopped(self, envelope: Envelope[TrainingJobStopped]) -> None:
        await self._ended(envelope.data.job_name, envelope.data)

    async def _ended(self, job_name: str, outcome: TrialOutcome) -> None:
        await self._apply(job_name, outcome, record_outcome)
        await self._advance_for(job_name)

    async def _apply(self, job_name: str, event: Any, rule: Any) -> bool:
        """Apply `rule(job, trial_number, event)` to the trial's job; whether it is a trial."""
        parsed = parse_trial_name(job_name)
        if parsed is None:
            return False
        name, number = parsed
        if await asyncio.to_thread(self.jobs.get_or_none, job_key(name)) is None:
            return False

        def change(current: TuningJob | None) -> TuningJob:
            if current is None:
                raise NotFound(f"tuning job {name} vanished")
            return rule(current, number, job_name, event)  # type: ignore[no-any-return]

        await asyncio.to_thread(self.jobs.update, job_key(name), change)
        return True

    async def _advance_for(self, job_name: str) -> None:
        parsed = parse_trial_name(job_name)
        if parsed is not None:
            await self.engine.advance(parsed[0])

    # Background ----------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Every running job: stop it past its max runtime, then do whatever it is owed."""
        for job in await self.list_jobs():
            if job.status in TERMINAL_TUNING and job.outcome_published:
                continue
            limit = job.request.resource_limits.max_runtime_s
            if (
                limit is not None
                and job.end_as is None
                and utc_now() - job.created_at > timedelta(seconds=limit)
            ):
                with contextlib.suppress(Conflict):
                    await self.stop(job.tuning_job_name, f"max_runtime_s={limit} reached")
                continue
            await self.engine.advance(job.tuning_job_name)

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as error:  # the next sweep tries again
                log.warning("tuner sweep failed: %r", error)
            await asyncio.sleep(self.settings.sweep_interval_s)


def confined(
    request: HyperParameterTuningJobRequested, store: ObjectStore
) -> HyperParameterTuningJobRequested:
    """The request with every location it names checked (400 naming the field)."""
    definition = request.training_job_definition
    channels = [
        channel.model_copy(
            update={
                "uri": confine_channel(
                    channel.uri,
                    field=f"training_job_definition.input_channels[{index}].uri",
                    store=store,
                )
            }
        )
        for index, channel in enumerate(definition.input_channels)
    ]
    update: dict[str, Any] = {"input_channels": channels}
    for field in ("entry_point", "output_uri"):
        value = getattr(definition, field)
        if value is not None:
            location, hash_, script = value.partition("#")
            key = confine(location, field=f"training_job_definition.{field}", store=store)
            update[field] = f"{key}#{script}" if hash_ else key
    return request.model_copy(
        update={"training_job_definition": definition.model_copy(update=update)}
    )
