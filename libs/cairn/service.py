"""The service framework: a service declares handlers; the plumbing is here, once.

    service = Service("trainer")

    @service.on(TrainingJobRequested)
    async def train(envelope: Envelope[TrainingJobRequested]) -> None:
        ...
        await service.publish(TrainingJobCompleted(...), cause=envelope)

`service.run()` serves the FastStream broker and the FastAPI control plane in one process and one
event loop: the broker starts and stops inside the API's lifespan, so SIGTERM lets uvicorn finish,
then the broker waits for in-flight handlers (FastStream's graceful timeout) and commits.

What every service gets here, once:
- locked by default: the key ring, an `Authenticator` on every route (`cairn.auth.http`), the
  admin routes (`/admin/keys`, `/admin/audit`) and the audit trail (`audit`);
- signed events: everything `publish` sends is signed with the service's own credential, and
  privileged requests are verified before a handler sees them (`EventSpec.required_scope`);
- one lifecycle: start-up runs broadcast positioning, `resource` openers, the broker, then
  `background` loops and broadcast readers; shutdown runs it backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker
from pydantic import BaseModel
from starlette.types import ASGIApp

from cairn.audit import AuditRecord, Outcome, write_audit_record
from cairn.auth.admin_routes import router as admin_router
from cairn.auth.authenticator import Authenticator
from cairn.auth.bootstrap import ensure_bootstrap_key
from cairn.auth.http import assert_routes_guarded
from cairn.auth.keys import KeyRing
from cairn.auth.principal import AUTH_DISABLED, Principal
from cairn.auth.sealing import secret_box
from cairn.auth.signing import SERVICE_KEY_PREFIX, EnvelopeVerifier
from cairn.bus import (
    ProcessedLedger,
    build_broker,
    ensure_topics,
    publish_event,
    start_broker,
    subscribe,
)
from cairn.bus.broadcast import BroadcastReader
from cairn.bus.deadletter import (
    DLQ_ERROR,
    DLQ_GROUP,
    DLQ_ORIGINAL_TOPIC,
    DLQ_REASON,
    MAX_ERROR_CHARS,
    publish_dead_letter,
)
from cairn.bus.publish import Signer
from cairn.contracts.catalogue import EventSpec, load_contract_modules, spec_for
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import AuditRecorded
from cairn.contracts.state import WorkerPoolDeclaration, write_state
from cairn.http import DEFAULT_MAX_BODY_BYTES, create_api
from cairn.settings import CairnSettings, get_settings
from cairn.store import open_store
from cairn.store.base import ObjectStore
from cairn.telemetry import setup_telemetry

log = logging.getLogger("cairn.service")

ModelT = TypeVar("ModelT", bound=BaseModel)
Handler = Callable[[Envelope[Any]], Awaitable[None]]
HandlerT = TypeVar("HandlerT", bound=Handler)

BROKER_PING_TIMEOUT_S = 2.0
Opener = Callable[[], Awaitable[Any]]
Closer = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class _Resource:
    name: str
    open: Opener
    close: Closer | None


class Service:
    """One Cairn service: its settings, store, Kafka broker and HTTP API, wired the same way.

    Args:
        name: the service name; the source of its events and the default consumer group suffix.
        settings: kernel settings (default: read from the environment).
        store: the object store (default: `open_store(settings=settings)`).
        max_body_bytes: larger HTTP request bodies are refused with 413.
        measures_lag: the service reads every consumer group's lag (the Kafka ACLs give it
            Describe on every topic and group).
    """

    def __init__(
        self,
        name: str,
        *,
        settings: CairnSettings | None = None,
        store: ObjectStore | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        measures_lag: bool = False,
    ) -> None:
        self.name = name
        self.measures_lag = measures_lag
        self.settings = settings if settings is not None else get_settings()
        load_contract_modules(self.settings.contract_modules)
        self.store = store if store is not None else open_store(settings=self.settings)
        self.broker: KafkaBroker = build_broker(self.settings, client_id=f"cairn-{name}")
        self.box = secret_box(self.settings)
        self.authenticator = Authenticator(
            KeyRing(self.store, self.box), enabled=self.settings.auth_enabled
        )
        self.verifier = EnvelopeVerifier(self.authenticator.ring, self.box)
        self.signer = Signer(SERVICE_KEY_PREFIX + name, self.box.service_secret(name))
        self.api: FastAPI = create_api(
            name,
            self.settings,
            readiness={"broker": self._broker_ready},
            max_body_bytes=max_body_bytes,
        )
        self.api.state.store = self.store
        self.api.state.secret_box = self.box
        self.api.state.authenticator = self.authenticator
        self.api.state.audit_sink = self._record_audit
        self.api.include_router(admin_router)
        self._ledgers: dict[str, ProcessedLedger] = {}
        self._background: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._resources: list[_Resource] = []
        self._broadcasts: list[BroadcastReader] = []
        self._pools: list[WorkerPoolDeclaration] = []
        self._join_after_start: set[str] = set()
        self._idle_groups: set[str] = set()
        self._observer_groups: set[str] = set()
        self._front: Callable[[FastAPI], ASGIApp] | None = None
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
        join_after_start: bool = False,
        start: bool = True,
        observer: bool = False,
        **consumer_overrides: Any,
    ) -> Callable[[HandlerT], HandlerT]:
        """Subscribe the decorated handler to an event type (manual commit, retries, DLQ, dedupe).

        Args:
            event_model: the event's data model, registered in the catalogue.
            group: the consumer group (default `cairn.<service>.<event-type>`); give each
                subscription of a process its own group.
            worker_pool: the handler runs in a scalable worker pool (shorter session timeouts).
            join_after_start: join the group in the background once the service is up, so its
                routes answer without waiting on that join.
            start: False declares the subscription (contracts, Kafka ACLs) without joining its
                group in this process: replicas of another kind (a GPU pool) join it.
            observer: the service watches requests another service owns; an unauthorised
                one is skipped here (its owner dead-letters it), not dead-lettered twice.
            **consumer_overrides: aiokafka consumer options, e.g. `max_poll_interval_ms` for
                handlers that run longer than aiokafka's default 5 minutes.
        """
        group_id = group or self.default_group(event_model)
        if join_after_start:
            self._join_after_start.add(group_id)
        if not start:
            self._idle_groups.add(group_id)
        if observer:
            self._observer_groups.add(group_id)

        def register(handler: HandlerT) -> HandlerT:
            subscribe(
                self.broker,
                event_model,
                handler,
                group_id=group_id,
                ledger=self._ledger(group_id),
                settings=self.settings,
                worker_pool=worker_pool,
                authorise=self._authorise_request,
                observer=observer,
                **consumer_overrides,
            )
            return handler

        return register

    def broadcast(self, event_model: type[BaseModel]) -> Callable[[HandlerT], HandlerT]:
        """Every replica receives every event of this type from the moment it starts (no group).

        The reader is positioned at the end of the log before any `resource` opens, so a
        snapshot loaded by a resource misses nothing published after it.
        """
        spec = spec_for(event_model)

        def register(handler: HandlerT) -> HandlerT:
            reader = BroadcastReader(
                self.settings, spec, handler, client_id=f"cairn-{self.name}-broadcast"
            )
            self._broadcasts.append(reader)
            return handler

        return register

    @property
    def broadcast_topics(self) -> tuple[str, ...]:
        """Topics this service reads on every replica without a consumer group."""
        return tuple(sorted({reader.spec.topic for reader in self._broadcasts}))

    def resource(self, name: str, open_fn: Opener, close_fn: Closer | None = None) -> None:
        """Open `open_fn()` when the service starts (before the broker) and close it last.

        `close_fn(value)` gets what `open_fn` returned. Resources close in reverse order.
        """
        self._resources.append(_Resource(name, open_fn, close_fn))

    def include_router(self, router: APIRouter) -> None:
        """Add a module-level router; the kernel's guard covers every route in it."""
        self.api.include_router(router)

    def declare_worker_pool(self, pool: WorkerPoolDeclaration) -> None:
        """Declare a pool this service's workers form; written at start for the autoscaler."""
        self._pools.append(pool)

    async def publish(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]:
        """Publish an event (signed by this service); `cause` carries the correlation forward."""
        return await publish_event(
            self.broker,
            data,
            source=self.name,
            correlation_id=correlation_id,
            cause=cause,
            signer=self.signer,
        )

    async def dead_letter(
        self, envelope: Envelope[Any], reason: str, *, error: str = "", group: str = ""
    ) -> None:
        """Send an envelope to its topic's DLQ with the reason; truncated when it is too big.

        A copy over the producer's limit goes as its first `DLQ_TRUNCATED_VALUE_BYTES` with
        `cairn-dlq-truncated` and `cairn-dlq-original-size-bytes` headers (`cairn.bus.deadletter`).
        """
        spec = spec_for(envelope.type)
        headers = {
            DLQ_REASON: reason,
            DLQ_ERROR: error[:MAX_ERROR_CHARS],
            DLQ_GROUP: group or f"cairn.{self.name}",
            DLQ_ORIGINAL_TOPIC: spec.topic,
        }
        await publish_dead_letter(
            self.broker,
            spec.dlq_topic,
            envelope.model_dump_json().encode(),
            key=spec.key_of(envelope.data),
            headers=headers,
            correlation_id=envelope.correlation_id,
        )

    async def principal_of(self, envelope: Envelope[Any]) -> Principal:
        """Who signed a (verified) request: their key's principal, or `service:<name>`."""
        if not self.settings.auth_enabled:
            return AUTH_DISABLED
        payload = json.loads(envelope.model_dump_json())
        return await asyncio.to_thread(self.verifier.verify, payload)

    async def audit(
        self,
        *,
        action: str,
        resource: str,
        principal: Principal | str,
        outcome: Outcome = "success",
        correlation_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Record a control-plane change made from an event (HTTP routes are audited for you).

        A change no request caused (one a service makes at start) gets a correlation id of its
        own, so every record can be followed with `cairn trace`.
        """
        name, key_id = (
            (principal.name, principal.key_id)
            if isinstance(principal, Principal)
            else (principal, "")
        )
        record = AuditRecord(
            principal=name,
            key_id=key_id,
            action=action,
            resource=resource,
            outcome=outcome,
            service=self.name,
            correlation_id=correlation_id or str(uuid.uuid4()),
            details=details or {},
        )
        await self._record_audit(record)
        return record

    async def _record_audit(self, record: AuditRecord) -> None:
        """Store the record (create-only), then announce it; a lost event never loses the record."""
        key = await asyncio.to_thread(write_audit_record, self.store, record)
        event = AuditRecorded(
            record_id=record.record_id,
            principal=record.principal,
            action=record.action,
            resource=record.resource,
            outcome=record.outcome,
            audit_key=key,
        )
        try:
            await self.publish(event, correlation_id=record.correlation_id)
        except Exception as error:  # the stored record is what counts; the event is a notice
            log.warning("audit record %s stored but not announced: %r", key, error)

    async def _authorise_request(self, spec: EventSpec, value: bytes) -> None:
        """A privileged request must be signed by its owner, a listed sender or a scoped key."""
        if not self.settings.auth_enabled:
            return
        await asyncio.to_thread(self.verifier.authorise, spec, json.loads(value))

    def background(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `loop()` as a task while the service runs: started after the broker, cancelled first.

        For a service's own periodic work (rollout driver, schedules, pollers); the loop keeps its
        state in the store, so a restart resumes it.
        """
        self._background.append((name, loop))

    def front(self, wrap: Callable[[FastAPI], ASGIApp]) -> None:
        """Serve `wrap(api)` instead of the API: a plain-ASGI fast path for a hot route that
        answers what it owns and passes everything else (and the lifespan) to the API.

        The fast path authenticates with `self.authenticator` itself: the guard is not on it.
        """
        self._front = wrap

    @property
    def asgi(self) -> ASGIApp:
        """What `run` serves: the API, behind the front if one is set."""
        return self._front(self.api) if self._front is not None else self.api

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve the API and consume events until SIGTERM/SIGINT (blocking); on `sockets` when
        given (bound by the caller: the gateway's processes share one port), else on the port."""
        setup_telemetry(self.name, self.settings)
        config = uvicorn.Config(
            self.asgi,
            host=self.settings.http_host,
            port=self.settings.http_port,
            lifespan="on",
            log_config=None,
            access_log=False,
        )
        uvicorn.Server(config).run(sockets=sockets)

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
            async with inner(app) as state, contextlib.AsyncExitStack() as stack:
                await self._start_platform_parts()
                await ensure_topics(self.settings)
                for reader in self._broadcasts:
                    await reader.position_at_end()
                    stack.push_async_callback(reader.stop)
                for resource in self._resources:
                    value = await resource.open()
                    if resource.close is not None:
                        stack.push_async_callback(resource.close, value)
                join_later = await start_broker(
                    self.broker, frozenset(self._join_after_start), frozenset(self._idle_groups)
                )
                stack.push_async_callback(self.broker.stop)
                loops = [(f"broadcast-{r.spec.type}", r.run) for r in self._broadcasts]
                loops.append(("join-after-start", join_later))
                tasks = [
                    asyncio.create_task(loop(), name=name)
                    for name, loop in [*loops, *self._background]
                ]
                try:
                    yield state
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task

        self.api.router.lifespan_context = lifespan

    async def _start_platform_parts(self) -> None:
        """Refuse unguarded routes, warn when auth is off, create the bootstrap key and pools."""
        assert_routes_guarded(self.api)
        if not self.settings.auth_enabled:
            log.warning(
                "AUTHENTICATION IS OFF (CAIRN_AUTH_ENABLED=false): every route and every "
                "request event of %s is open to anyone who can reach it",
                self.name,
            )
        await asyncio.to_thread(ensure_bootstrap_key, self.settings, self.store, self.box)
        for pool in self._pools:
            await asyncio.to_thread(write_state, self.store, pool, pool.name)


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
