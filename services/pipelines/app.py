"""Wiring of the pipelines service: definitions, executions, step completions and triggers."""

from __future__ import annotations

from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.pipelines.completions import COMPLETIONS
from services.pipelines.config import PipelinesSettings
from services.pipelines.handlers import PipelineHandlers
from services.pipelines.routes import ROUTERS
from services.pipelines.trigger_runner import TriggerRunner


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: PipelinesSettings | None = None,
) -> Service:
    """The pipelines service; tests pass their own settings, store and config."""
    service = Service("pipelines", settings=settings, store=store)
    config = config or PipelinesSettings()
    handlers = PipelineHandlers(service.store, config, service)
    runner = TriggerRunner(handlers, service.settings, config, service)
    service.api.state.pipelines = handlers
    service.api.state.pipeline_triggers = runner
    for event_model in COMPLETIONS:
        # Each completion type in its own group, joined in the background: the API answers at
        # once, and a step's answer waits in its topic until the group has joined.
        service.on(
            event_model, join_after_start=True, fetch_max_wait_ms=config.completion_fetch_wait_ms
        )(handlers.on_completion)
    service.background("pipeline-sweep", handlers.sweep_forever)
    service.background("pipeline-schedules", runner.schedules_forever)
    service.background("pipeline-triggers", runner.read_forever)
    for router in ROUTERS:
        service.include_router(router)
    return service


__getattr__ = lazy_service(create_service)
