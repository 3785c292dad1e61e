"""The service framework: a service declares handlers; the plumbing is here, once.

    service = Service("trainer")

    @service.on(TrainingJobRequested)
    async def train(envelope: Envelope[TrainingJobRequested]) -> None:
        ...
        await service.publish(TrainingJobCompleted(...), cause=envelope)

`service.run()` serves the FastStream broker and the FastAPI control plane in one process and one
event loop: the broker starts and stops inside the API's lifespan, so SIGTERM lets uvicorn finish,
then the broker waits for in-flight handlers (FastStream's graceful timeout) and commits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from cairn.bus import (
    ProcessedLedger,
    build_broker,
    ensure_topics,
    publish_event,
    start_broker,
    subscribe,
)
from cairn.contracts.catalogue import load_contract_modules, spec_for
from cairn.contracts.envelope import Envelope
from cairn.http import DEFAULT_MAX_BODY_BYTES, create_api
from cairn.settings import CairnSettings, get_settings
from cairn.store import open_store
from cairn.store.base import ObjectStore
from cairn.telemetry import setup_telemetry

ModelT = TypeVar("ModelT", bound=BaseModel)
Handler = Callable[[Envelope[Any]], Awaitable[None]]
HandlerT = TypeVar("HandlerT", bound=Handler)

BROKER_PING_TIMEOUT_S = 2.0


class Service:
    """One Cairn service: its settings, store, Kafka broker and HTTP API, wired the same way.

    Args:
        name: the service name; the source of its events and the default consumer group suffix.
        settings: kernel settings (default: read from the environment).
        store: the object store (default: `open_store(settings=settings)`).
        max_body_bytes: larger HTTP request bodies are refused with 413.
    """

    def __init__(
        self,
        name: str,
        *,
        settings: CairnSettings | None = None,
        store: ObjectStore | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.name = name
        self.settings = settings if settings is not None else get_settings()
        load_contract_modules(self.settings.contract_modules)
        self.store = store if store is not None else open_store(settings=self.settings)
        self.broker: KafkaBroker = build_broker(self.settings, client_id=f"cairn-{name}")
        self.api: FastAPI = create_api(
            name,
            self.settings,
            readiness={"broker": self._broker_ready},
            max_body_bytes=max_body_bytes,
        )
        self._ledgers: dict[str, ProcessedLedger] = {}
        self._background: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._wrap_lifespan()

    def default_group(self, event_model: type[BaseModel]) -> str:
        """`cairn.<service>.<event-type>`: one consumer group per subscription.

        Several subscribers of one process sharing a group would rebalance each other on every
        join (tens of seconds on Tansu); a group per subscription joins once.
        """
        topic = spec_for(event_model).topic
        return f"cairn.{self.name}.{topic.rsplit('.', 1)[-1]}"

    def on(
        self,
        event_model: type[BaseModel],
        group: str | None = None,
        worker_pool: bool = False,
        **consumer_overrides: Any,
    ) -> Callable[[HandlerT], HandlerT]:
        """Subscribe the decorated handler to an event type (manual commit, retries, DLQ, dedupe).

        Args:
            event_model: the event's data model, registered in the catalogue.
            group: the consumer group (default `cairn.<service>.<event-type>`); give each
                subscription of a process its own group.
            worker_pool: the handler runs in a scalable worker pool (shorter session timeouts).
            **consumer_overrides: aiokafka consumer options, e.g. `max_poll_interval_ms` for
                handlers that run longer than aiokafka's default 5 minutes.
        """
        group_id = group or self.default_group(event_model)

        def register(handler: HandlerT) -> HandlerT:
            subscribe(
                self.broker,
                event_model,
                handler,
                group_id=group_id,
                ledger=self._ledger(group_id),
                settings=self.settings,
                worker_pool=worker_pool,
                **consumer_overrides,
            )
            return handler

        return register

    async def publish(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]:
        """Publish an event this service produces; `cause` carries the correlation forward."""
        return await publish_event(
            self.broker, data, source=self.name, correlation_id=correlation_id, cause=cause
        )

    def background(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `loop()` as a task while the service runs: started after the broker, cancelled first.

        For a service's own periodic work (rollout driver, schedules, pollers); the loop keeps its
        state in the store, so a restart resumes it.
        """
        self._background.append((name, loop))

    def run(self) -> None:
        """Serve the API and consume events until SIGTERM/SIGINT (blocking)."""
        setup_telemetry(self.name, self.settings)
        config = uvicorn.Config(
            self.api,
            host=self.settings.http_host,
            port=self.settings.http_port,
            lifespan="on",
            log_config=None,
            access_log=False,
        )
        uvicorn.Server(config).run()

    def _ledger(self, group_id: str) -> ProcessedLedger:
        ledger = self._ledgers.get(group_id)
        if ledger is None:
            ledger = self._ledgers[group_id] = ProcessedLedger(self.store, group_id)
        return ledger

    async def _broker_ready(self) -> bool:
        try:
            return bool(await self.broker.ping(timeout=BROKER_PING_TIMEOUT_S))
        except Exception:
            return False

    def _wrap_lifespan(self) -> None:
        """Start the broker after the API's own start-up and stop it before its shutdown."""
        inner = self.api.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
            async with inner(app) as state:
                await ensure_topics(self.settings)
                await start_broker(self.broker)
                tasks = [asyncio.create_task(loop(), name=name) for name, loop in self._background]
                try:
                    yield state
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                    await self.broker.stop()

        self.api.router.lifespan_context = lifespan


def lazy_service(create: Callable[[], Service]) -> Callable[[str], Service]:
    """A module `__getattr__` that builds the module's `service` on first use.

    `services/<name>/app.py` sets `__getattr__ = lazy_service(create_service)`, so tests can import
    `create_service` without Kafka settings while `python -m services.<name>` and the contracts
    generator still find `app.service`.
    """
    built: list[Service] = []

    def module_getattr(name: str) -> Service:
        if name != "service":
            raise AttributeError(name)
        if not built:
            built.append(create())
        return built[0]

    return module_getattr
