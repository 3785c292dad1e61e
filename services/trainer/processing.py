"""Processing jobs on the trainer's workers: the subscription, the requeue loop, the routes.

A consumer group of its own (`cairn.trainer.processing`), so a long processing job never holds
up training requests and the other way round; every trainer replica is a member.
"""

from __future__ import annotations

from cairn.contracts.processing_events import ProcessingJobRequested
from cairn.service import Service

from services.trainer.config import TrainerSettings
from services.trainer.processing_handlers import ProcessingHandlers
from services.trainer.processing_routes import router

PROCESSING_GROUP = "cairn.trainer.processing"


def register_processing(service: Service, config: TrainerSettings) -> ProcessingHandlers:
    """Add processing jobs to the trainer service."""
    handlers = ProcessingHandlers(service.store, config, service)
    service.api.state.processing = handlers
    service.on(
        ProcessingJobRequested,
        group=PROCESSING_GROUP,
        worker_pool=True,
        join_after_start=True,
        max_poll_interval_ms=config.max_poll_interval_ms,
    )(handlers.on_requested)
    service.include_router(router)
    service.background("processing-requeue", handlers.requeue_forever)
    return handlers
