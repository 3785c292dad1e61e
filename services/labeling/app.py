"""Wiring of the labeling service: workforces, labeling jobs, work queues and the page."""

from __future__ import annotations

from cairn.contracts.events import DatasetIngested, DatasetRejected
from cairn.contracts.labeling_events import LabelingJobRequested
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.labeling.autolabel_handlers import install_autolabel
from services.labeling.completion import JobCompletion
from services.labeling.config import LabelingSettings
from services.labeling.handlers import LabelingHandlers
from services.labeling.page import PageFront
from services.labeling.review_routes import install_reviews
from services.labeling.routes import annotators, jobs, workforces
from services.labeling.tasks import Tasks


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: LabelingSettings | None = None,
) -> Service:
    """The labeling service; tests pass their own settings and store.

    `service.api.state.labeling` (jobs) and `.labeling_tasks` (queues, with the auto-labelling
    hooks `set_machine_labels` / `set_priorities`) are what other modules of the service use.
    """
    service = Service("labeling", settings=settings, store=store)
    handlers = LabelingHandlers(service.store, service.box, config or LabelingSettings(), service)
    service.api.state.labeling = handlers
    service.api.state.labeling_tasks = Tasks(handlers)
    service.on(LabelingJobRequested)(handlers.on_requested)
    completion = JobCompletion(handlers)
    service.api.state.labeling_completion = completion
    service.on(DatasetIngested)(completion.on_dataset_ingested)
    service.on(DatasetRejected)(completion.on_dataset_rejected)
    service.background("labeling-sweep", completion.sweep_forever)
    for router in (workforces, jobs, annotators):
        service.include_router(router)
    service.front(PageFront)
    install_reviews(service)  # human review of live predictions (part B of issue 12)
    install_autolabel(service, handlers, service.api.state.labeling_tasks)
    return service


__getattr__ = lazy_service(create_service)
