"""Wiring of the trainer: the TrainingJobRequested worker and the training-jobs HTTP API."""

from __future__ import annotations

import logging

from cairn.contracts.events import TrainingJobRequested
from cairn.contracts.training_events import GpuTrainingJobRequested
from cairn.contracts.tuner_events import TrainingJobStopRequested
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.trainer.config import TrainerSettings
from services.trainer.gpu import gpu_status
from services.trainer.handlers import TrainerHandlers
from services.trainer.pools import TRAINER_GPU_GROUP, TRAINER_GROUP, TRAINER_POOLS
from services.trainer.processing import register_processing
from services.trainer.routes import router

log = logging.getLogger("cairn.trainer")


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: TrainerSettings | None = None,
) -> Service:
    """The trainer service; tests pass their own settings and store."""
    service = Service("trainer", settings=settings, store=store)
    config = config or TrainerSettings()
    if config.device == "gpu" and not (usable := gpu_status())[0]:
        log.warning("GPU-pool worker without a usable GPU (%s): jobs will train on CPU", usable[1])
    handlers = TrainerHandlers(service.store, config, service)
    service.api.state.trainer = handlers
    if config.device != "gpu":  # GPU-pool members read only the GPU topic
        service.on(
            TrainingJobRequested,
            group=TRAINER_GROUP,
            worker_pool=True,
            max_poll_interval_ms=config.max_poll_interval_ms,
        )(handlers.on_requested)
    # Declared on every replica (contracts, Kafka ACLs), joined only where a GPU job may run.
    service.on(
        GpuTrainingJobRequested,
        group=TRAINER_GPU_GROUP,
        worker_pool=True,
        start=handlers.runs_gpu_jobs_here(),
        max_poll_interval_ms=config.max_poll_interval_ms,
    )(handlers.on_gpu_requested)
    service.on(TrainingJobStopRequested)(handlers.on_stop_requested)
    for pool in TRAINER_POOLS:
        service.declare_worker_pool(pool)
    service.include_router(router)
    service.background("trainer-requeue", handlers.requeue_forever)
    register_processing(service, config)
    return service


__getattr__ = lazy_service(create_service)
