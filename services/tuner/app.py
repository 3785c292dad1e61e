"""Wiring of the tuner: tuning requests, the trainer's trial events and the tuning-jobs API."""

from __future__ import annotations

from cairn.contracts.events import TrainingJobCompleted, TrainingJobFailed, TrainingJobProgressed
from cairn.contracts.tuner_events import HyperParameterTuningJobRequested, TrainingJobStopped
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.tuner.config import TunerSettings
from services.tuner.handlers import TunerHandlers
from services.tuner.routes import router


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: TunerSettings | None = None,
) -> Service:
    """The tuner service; tests pass their own settings and store."""
    service = Service("tuner", settings=settings, store=store)
    handlers = TunerHandlers(service.store, config or TunerSettings(), service)
    service.api.state.tuner = handlers
    service.on(HyperParameterTuningJobRequested)(handlers.on_requested)
    service.on(TrainingJobProgressed)(handlers.on_progress)
    service.on(TrainingJobCompleted)(handlers.on_completed)
    service.on(TrainingJobFailed)(handlers.on_failed)
    service.on(TrainingJobStopped)(handlers.on_stopped)
    service.background("tuning-sweep", handlers.sweep_forever)
    service.include_router(router)
    return service


__getattr__ = lazy_service(create_service)
