"""Wiring of the registry: one `Registry` behind its subscribers and routes."""

from __future__ import annotations

from cairn.contracts.events import EndpointUpdated, ModelApprovalRequested, TrainingJobCompleted
from cairn.contracts.pipeline_events import ModelRegistrationRequested
from cairn.contracts.tuner_events import HyperParameterTuningJobCompleted
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.registry.config import RegistrySettings
from services.registry.handlers import Registry
from services.registry.lineage import EndpointLinker
from services.registry.routes import ROUTERS


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: RegistrySettings | None = None,
) -> Service:
    """The registry service: subscriptions and HTTP routes over one `Registry`."""
    config = config or RegistrySettings()
    service = Service("registry", settings=settings, store=store)
    registry = Registry(service.store, service.publish, authority=service, config=config)
    linker = EndpointLinker(service.store)
    service.api.state.registry = registry
    group = config.consumer_group
    service.on(TrainingJobCompleted, group=f"{group}.training-job-completed")(
        registry.on_training_job_completed
    )
    service.on(HyperParameterTuningJobCompleted, group=f"{group}.tuning-job-completed")(
        registry.on_tuning_job_completed
    )
    service.on(EndpointUpdated, group=f"{group}.endpoint-updated")(linker.on_endpoint_updated)
    service.on(ModelRegistrationRequested, group=f"{group}.model-registration-requested")(
        registry.on_registration_requested
    )
    service.on(ModelApprovalRequested, group=f"{group}.model-approval-requested")(
        registry.on_approval_requested
    )
    for router in ROUTERS:
        service.include_router(router)
    service.background("registry-announcements", registry.announce_forever)
    return service


__getattr__ = lazy_service(create_service)
