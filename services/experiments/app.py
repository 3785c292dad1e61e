"""Wiring of the experiments service: one subscription per job event it folds into runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    TrainingJobCompleted,
    TrainingJobFailed,
    TrainingJobProgressed,
    TrainingJobRequested,
    TrainingJobStarted,
)
from cairn.contracts.pipeline_events import (
    PipelineExecutionFailed,
    PipelineExecutionStarted,
    PipelineExecutionStopped,
    PipelineExecutionSucceeded,
    PipelineStepStarted,
    PipelineStepSucceeded,
)
from cairn.contracts.processing_events import (
    ProcessingJobCompleted,
    ProcessingJobFailed,
    ProcessingJobRequested,
    ProcessingJobStarted,
)
from cairn.contracts.tuner_events import (
    HyperParameterTuningJobCompleted,
    HyperParameterTuningJobFailed,
    HyperParameterTuningJobRequested,
    HyperParameterTuningJobStarted,
    HyperParameterTuningJobStopped,
    TrainingJobStopped,
    TuningTrialCompleted,
)
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from pydantic import BaseModel

from services.experiments.config import ExperimentsSettings
from services.experiments.handlers import ExperimentsHandlers
from services.experiments.pipeline_runs import PipelineRuns
from services.experiments.routes import router

Handler = Callable[[Envelope[Any]], Awaitable[None]]


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: ExperimentsSettings | None = None,
) -> Service:
    """The experiments service; tests pass their own settings and store."""
    service = Service("experiments", settings=settings, store=store)
    handlers = ExperimentsHandlers(service.store)
    pipelines = PipelineRuns(handlers)
    service.api.state.experiments = handlers
    service.api.state.experiments_config = config or ExperimentsSettings()
    subscriptions: list[tuple[type[BaseModel], Handler]] = [
        (TrainingJobRequested, handlers.on_training_requested),
        (TrainingJobStarted, handlers.on_training_started),
        (TrainingJobProgressed, handlers.on_training_progressed),
        (TrainingJobCompleted, handlers.on_training_completed),
        (TrainingJobFailed, handlers.on_training_failed),
        (TrainingJobStopped, handlers.on_training_stopped),
        (HyperParameterTuningJobRequested, handlers.on_tuning_requested),
        (HyperParameterTuningJobStarted, handlers.on_tuning_started),
        (TuningTrialCompleted, handlers.on_trial_completed),
        (HyperParameterTuningJobCompleted, handlers.on_tuning_completed),
        (HyperParameterTuningJobFailed, handlers.on_tuning_failed),
        (HyperParameterTuningJobStopped, handlers.on_tuning_stopped),
        (ProcessingJobRequested, handlers.on_processing_requested),
        (ProcessingJobStarted, handlers.on_processing_started),
        (ProcessingJobCompleted, handlers.on_processing_completed),
        (ProcessingJobFailed, handlers.on_processing_failed),
        (PipelineExecutionStarted, pipelines.on_started),
        (PipelineStepStarted, pipelines.on_step_started),
        (PipelineStepSucceeded, pipelines.on_step_succeeded),
        (PipelineExecutionSucceeded, pipelines.on_succeeded),
        (PipelineExecutionFailed, pipelines.on_failed),
        (PipelineExecutionStopped, pipelines.on_stopped),
    ]
    for event_model, handler in subscriptions:
        # Joined in the background: the routes answer while twenty-odd groups join. Observers:
        # an unsigned request is dead-lettered by the service that owns it, not again here.
        service.on(event_model, join_after_start=True, observer=True)(handler)
    service.include_router(router)
    return service


__getattr__ = lazy_service(create_service)
