"""Wiring of the feature store: handlers, their stores' lifetime, subscribers, routes, fast path."""

from __future__ import annotations

from cairn.contracts.events import (
    FeatureGroupCreationRequested,
    FeatureIngestionRequested,
    FeatureRecordsPut,
    TrainingSetRequested,
)
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.featurestore import routes
from services.featurestore.config import FeatureStoreSettings
from services.featurestore.fastpath import install_fast_path
from services.featurestore.handlers import SOURCE, FeatureStoreHandlers


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: FeatureStoreSettings | None = None,
) -> Service:
    """The feature store service; tests may pass their own settings, store and config."""
    config = config or FeatureStoreSettings()
    service = Service(SOURCE, settings=settings, store=store)
    handlers = FeatureStoreHandlers(
        service.store,
        service.settings.home,
        config,
        publish=service.publish,
        dead_letter=service.dead_letter,
    )
    service.api.state.featurestore = handlers
    service.resource("featurestore", handlers.open, handlers.close)
    group = config.consumer_group
    on = service.on
    on(FeatureGroupCreationRequested, group=f"{group}.feature-group-creation-requested")(
        handlers.on_creation_requested
    )
    on(FeatureRecordsPut, group=f"{group}.feature-records-put")(handlers.on_records_put)
    on(FeatureIngestionRequested, group=f"{group}.feature-ingestion-requested")(
        handlers.on_ingestion_requested
    )
    on(TrainingSetRequested, group=f"{group}.training-set-requested")(
        handlers.on_training_set_requested
    )
    service.include_router(routes.groups)
    service.include_router(routes.training_sets)
    install_fast_path(service, handlers.current)
    return service


__getattr__ = lazy_service(create_service)
