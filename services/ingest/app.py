"""Wiring of the ingest service: handlers, the registration subscriber and the HTTP routes."""

from __future__ import annotations

from cairn.contracts.events import DatasetRegistrationRequested
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.ingest.config import IngestSettings
from services.ingest.handlers import IngestHandlers
from services.ingest.routes import router

# A large prefix can take longer than aiokafka's default 5-minute poll interval.
REGISTRATION_MAX_S = 3600


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: IngestSettings | None = None,
) -> Service:
    """The ingest service; tests may pass their own settings, store and ingest settings."""
    config = config or IngestSettings()
    service = Service(
        "ingest", settings=settings, store=store, max_body_bytes=config.max_upload_bytes
    )
    handlers = IngestHandlers(
        service.store, config, publish=service.publish, dead_letter=service.dead_letter
    )
    service.api.state.ingest = handlers
    service.on(DatasetRegistrationRequested, max_poll_interval_ms=REGISTRATION_MAX_S * 1000)(
        handlers.on_registration_requested
    )
    service.include_router(router)
    return service


__getattr__ = lazy_service(create_service)
