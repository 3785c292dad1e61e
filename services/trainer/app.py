"""Wiring of the trainer: the TrainingJobRequested worker and the training-jobs HTTP API."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import TrainingJobRequested
from cairn.errors import NotFound, ObjectNotFound
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from fastapi import Response
from fastapi.responses import PlainTextResponse

from services.trainer.config import TrainerSettings
from services.trainer.domain import JOBS_PREFIX, TrainingJob, job_key, logs_key, summary
from services.trainer.gpu import gpu_status
from services.trainer.handlers import TrainerHandlers

log = logging.getLogger("cairn.trainer")


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    trainer_settings: TrainerSettings | None = None,
) -> Service:
    """The trainer service; tests pass their own settings and store."""
    service = Service("trainer", settings=settings, store=store)
    config = trainer_settings or TrainerSettings()
    if config.device == "gpu" and not (usable := gpu_status())[0]:
        log.warning("GPU-pool worker without a usable GPU (%s): jobs will train on CPU", usable[1])
    handlers = TrainerHandlers(
        service.store, config, lambda data, cause: service.publish(data, cause=cause)
    )
    service.api.state.trainer = handlers

    # The worker-pool group the autoscaler measures (libs/cairn/pools.py: trainer-cpu/-gpu).
    @service.on(
        TrainingJobRequested,
        group="cairn.trainer",
        worker_pool=True,
        max_poll_interval_ms=config.max_poll_interval_ms,
    )
    async def train(envelope: Envelope[TrainingJobRequested]) -> None:
        await handlers.on_requested(envelope)

    @service.api.post("/training-jobs", status_code=202)
    async def create_training_job(request: TrainingJobRequested) -> dict[str, Any]:
        job = await asyncio.to_thread(handlers.create_pending, request)
        envelope = await service.publish(request)
        return {
            **summary(job),
            "event_id": str(envelope.event_id),
            "correlation_id": envelope.correlation_id,
        }

    @service.api.get("/training-jobs")
    async def list_training_jobs() -> dict[str, Any]:
        jobs = await asyncio.to_thread(_list_jobs, handlers)
        return {"training_jobs": [summary(job) for job in jobs]}

    @service.api.get("/training-jobs/{job_name}")
    async def describe_training_job(job_name: str) -> dict[str, Any]:
        versioned = await asyncio.to_thread(handlers.jobs.get_or_none, job_key(job_name))
        if versioned is None:
            raise NotFound(f"no training job {job_name!r}")
        return versioned.doc.model_dump(mode="json")

    @service.api.get("/training-jobs/{job_name}/logs")
    async def training_job_logs(job_name: str) -> Response:
        try:
            text = await asyncio.to_thread(handlers.store.get_bytes, logs_key(job_name))
        except ObjectNotFound:
            if await asyncio.to_thread(handlers.jobs.get_or_none, job_key(job_name)) is None:
                raise NotFound(f"no training job {job_name!r}") from None
            text = b""
        return PlainTextResponse(text.decode(errors="replace"))

    return service


def _list_jobs(handlers: TrainerHandlers) -> list[TrainingJob]:
    """Job docs sit directly under the prefix; their logs live one folder down."""
    jobs = []
    for info in handlers.store.list(JOBS_PREFIX + "/", recursive=False):
        if info.key.endswith(".json"):
            versioned = handlers.jobs.get_or_none(info.key[len(JOBS_PREFIX) + 1 :])
            if versioned is not None:
                jobs.append(versioned.doc)
    return jobs


__getattr__ = lazy_service(create_service)
