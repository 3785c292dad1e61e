"""The pipelines service layer: versioned definitions, executions and the steps' completions.

Everything durable is a document under `pipelines/` written conditionally: definitions (one per
version), executions (state + outbox), the keys started steps wait under, and the step cache. The
service never runs a step: it publishes the owning service's request and advances when that
service's completion or failure event arrives. `drive` is the one place an execution moves.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cairn.auth.principal import Principal
from cairn.contracts.catalogue import spec_for
from cairn.contracts.envelope import Envelope, utc_now
from cairn.documents import DocumentStore
from cairn.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from cairn.ports import Platform
from cairn.store.base import ObjectStore
from pydantic import BaseModel, Field, ValidationError

from services.pipelines import domain
from services.pipelines.caching import CacheEntry, StepCache, cache_key
from services.pipelines.completions import COMPLETIONS, wait_key
from services.pipelines.config import PipelinesSettings
from services.pipelines.definition import (
    PipelineDefinition,
    parse_definition,
    resolve_parameters,
    validate_definition,
)
from services.pipelines.domain import EXECUTIONS, Execution, execution_key
from services.pipelines.properties import DEPLOY_STEPS, build_request
from services.pipelines.references import MissingProperty, resolve

log = logging.getLogger("cairn.pipelines")

DEFINITIONS = "pipelines/definitions/"
WAITS = "pipelines/waits/"
ACTIVE = "pipelines/active/"


class PipelineVersion(BaseModel):
    name: str
    version: int = Field(ge=1)
    definition: PipelineDefinition
    created_by: str
    created_at: datetime


class Wait(BaseModel):
    execution_id: str
    step_name: str
    attempt: int
    since: datetime


class Active(BaseModel):
    execution_id: str


class _Plan(BaseModel):
    name: str
    request: tuple[str, dict[str, Any]] | None = None
    cache_key: str | None = None
    hit: CacheEntry | None = None
    token: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    failure: str | None = None


class PipelineHandlers:
    def __init__(
        self,
        store: ObjectStore,
        config: PipelinesSettings,
        platform: Platform,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.config = config
        self.platform = platform
        self.clock = clock
        self.versions: DocumentStore[PipelineVersion] = DocumentStore(
            store, PipelineVersion, DEFINITIONS
        )
        self.executions: DocumentStore[Execution] = DocumentStore(store, Execution, EXECUTIONS)
        self.waits: DocumentStore[Wait] = DocumentStore(store, Wait, WAITS)
        self.active: DocumentStore[Active] = DocumentStore(store, Active, ACTIVE)
        self.cache = StepCache(store)
        self._locks: dict[str, asyncio.Lock] = {}

    # Definitions -----------------------------------------------------------------------------

    async def save(
        self, name: str, raw: Any, principal: Principal, *, new: bool
    ) -> PipelineVersion:
        """Create (409 if it exists) or update (404 if not) a pipeline: a new version each time."""
        definition = parse_definition(raw)
        if definition.name is not None and definition.name != name:
            raise Conflict(f"the definition names pipeline {definition.name!r}, not {name!r}")
        definition = definition.model_copy(update={"name": name})
        validate_definition(definition)
        latest = await self._latest_version(name)
        if new and latest:
            raise Conflict(f"pipeline {name!r} exists; update it to add a version")
        if not new and not latest:
            raise NotFound(f"no pipeline {name!r}")
        version = PipelineVersion(
            name=name,
            version=latest + 1,
            definition=definition,
            created_by=principal.name,
            created_at=self.clock(),
        )
        try:
            await asyncio.to_thread(
                self.versions.create, f"{name}/{version.version:06d}.json", version
            )
        except PreconditionFailed:
            raise Conflict(f"pipeline {name!r} changed meanwhile; try again") from None
        return version

    async def _latest_version(self, name: str) -> int:
        keys = await asyncio.to_thread(self.versions.keys, f"{name}/")
        return max((int(key.rsplit("/", 1)[1].split(".")[0]) for key in keys), default=0)

    async def describe(self, name: str, version: int | None = None) -> PipelineVersion:
        number = version or await self._latest_version(name)
        found = await asyncio.to_thread(self.versions.get_or_none, f"{name}/{number:06d}.json")
        if found is None:
            raise NotFound(f"no pipeline {name!r}" + (f" version {version}" if version else ""))
        return found.doc

    async def list_pipelines(self) -> list[PipelineVersion]:
        keys = await asyncio.to_thread(self.versions.keys)
        names = sorted({key.split("/", 1)[0] for key in keys})
        return [await self.describe(name) for name in names]

    # Executions ------------------------------------------------------------------------------

    async def start(
        self,
        name: str,
        given: dict[str, Any],
        principal: Principal,
        *,
        execution_id: str | None = None,
        trigger_name: str | None = None,
    ) -> tuple[Execution, bool]:
        """A new execution of the latest version; with an `execution_id` it starts at most once."""
        pipeline = await self.describe(name)
        needs_deploy = [s.name for s in pipeline.definition.steps if s.type in DEPLOY_STEPS]
        if needs_deploy and not principal.allows("deploy"):
            raise Forbidden(f"steps {needs_deploy} need the deploy scope")
        approves = [
            s.name
            for s in pipeline.definition.steps
            if s.type == "RegisterModel" and s.arguments.get("approval_status") == "Approved"
        ]
        if approves and not principal.allows("approve"):
            raise Forbidden(f"steps {approves} register approved models: they need approve")
        execution = domain.new_execution(
            execution_id=execution_id or uuid.uuid4().hex,
            pipeline_name=name,
            version=pipeline.version,
            definition=pipeline.definition,
            parameters=resolve_parameters(pipeline.definition, given),
            started_by=principal.name,
            now=self.clock(),
            trigger_name=trigger_name,
        )
        key = execution_key(execution.execution_id)
        await asyncio.to_thread(
            self.active.update, key, lambda _: Active(execution_id=execution.execution_id)
        )
        try:
            await asyncio.to_thread(self.executions.create, key, execution)
        except PreconditionFailed:
            return await self.execution(execution.execution_id), False
        await self.drive(execution.execution_id)
        return await self.execution(execution.execution_id), True

    async def execution(self, execution_id: str) -> Execution:
        found = await asyncio.to_thread(self.executions.get_or_none, execution_key(execution_id))
        if found is None:
            raise NotFound(f"no pipeline execution {execution_id!r}")
        return found.doc

    async def list_executions(self, name: str | None = None) -> list[Execution]:
        found = await asyncio.to_thread(self.executions.list)
        runs = [item.doc for item in found if name is None or item.doc.pipeline_name == name]
        return sorted(runs, key=lambda run: run.created_at, reverse=True)

    async def stop(self, execution_id: str, principal: Principal) -> Execution:
        await self.execution(execution_id)
        await self._update(execution_id, lambda doc: domain.stop(doc, principal.name, self.clock()))
        await self.drive(execution_id)
        return await self.execution(execution_id)

    async def retry(self, execution_id: str) -> Execution:
        current = await self.execution(execution_id)
        if current.status not in ("Failed", "Stopped"):
            raise Conflict(
                f"execution {execution_id} is {current.status}; only a failed or "
                "stopped one can be retried"
            )
        await asyncio.to_thread(
            self.active.update,
            execution_key(execution_id),
            lambda _: Active(execution_id=execution_id),
        )
        await self._update(execution_id, lambda doc: domain.retry(doc, self.clock()))
        await self.drive(execution_id)
        return await self.execution(execution_id)

    # Completions -----------------------------------------------------------------------------

    async def on_completion(self, envelope: Envelope[Any]) -> None:
        """An owning service's completion or failure event: settle the step that waits on it."""
        outcome = COMPLETIONS[type(envelope.data)](envelope.data)
        if outcome is None:
            return
        wait = await asyncio.to_thread(self.waits.get_or_none, f"{outcome.wait_key}.json")
        if wait is None or envelope.occurred_at < wait.doc.since - timedelta(seconds=5):
            return  # not a pipeline's step, or an answer from before the step asked
        found = wait.doc
        now = self.clock()
        if outcome.properties is not None:
            props = outcome.properties

            def apply(doc: Execution) -> None:
                domain.step_succeeded(doc, found.step_name, found.attempt, props, now)

        else:

            def apply(doc: Execution) -> None:
                domain.step_failed(
                    doc, found.step_name, found.attempt, outcome.code, outcome.reason, now
                )

        execution = await self._update(found.execution_id, apply)
        state = execution.steps[found.step_name] if execution else None
        step = execution.definition.step(found.step_name) if execution else None
        if (
            execution is not None
            and state is not None
            and step is not None
            and state.status == "Succeeded"
            and state.cache_key
            and not state.cache_hit
            and step.cache is not None
            and step.cache.enabled
        ):
            entry = CacheEntry(
                cache_key=state.cache_key,
                step_type=step.type,
                properties=state.properties,
                execution_id=execution.execution_id,
                step_name=found.step_name,
                created_at=now,
            )
            await asyncio.to_thread(self.cache.remember, entry)
        await self.drive(found.execution_id)

    # Driving ---------------------------------------------------------------------------------

    async def _update(self, execution_id: str, fn: Callable[[Execution], None]) -> Execution | None:
        def change(doc: Execution | None) -> Execution:
            if doc is None:
                raise NotFound(f"no pipeline execution {execution_id!r}")
            copy = doc.model_copy(deep=True)
            fn(copy)
            return copy

        try:
            written = await asyncio.to_thread(
                self.executions.update, execution_key(execution_id), change
            )
        except NotFound:
            return None
        return written.doc

    def _plan(self, execution: Execution, name: str) -> _Plan:
        """What starting a step takes (blocking: cache keys and lookups read the store)."""
        step = execution.definition.step(name)
        attempt = execution.steps[name].attempt + 1
        try:
            arguments = resolve(execution, step.arguments)
        except MissingProperty as error:
            return _Plan(name=name, failure=str(error))
        plan = _Plan(name=name)
        if step.type == "Callback":
            plan.token, plan.payload = secrets.token_urlsafe(24), arguments
            key = wait_key(step.type, {}, plan.token)
        else:
            job = domain.request_id(execution, name, attempt)
            try:
                request = build_request(step.type, arguments, job)
            except ValidationError as error:
                return _Plan(name=name, failure=f"invalid request: {error.errors()[0]['msg']}")
            data = request.model_dump(mode="json")
            plan.request = (spec_for(type(request)).type, data)
            key = wait_key(step.type, data)
        now = self.clock()
        if step.cache is not None and step.cache.enabled:
            plan.cache_key = cache_key(self.store, step, arguments)
            plan.hit = self.cache.find(step, plan.cache_key, now)
        if plan.hit is None:
            wait = Wait(
                execution_id=execution.execution_id, step_name=name, attempt=attempt, since=now
            )
            self.waits.update(f"{key}.json", lambda _: wait)
        return plan

    def _apply(self, doc: Execution, plans: list[_Plan]) -> None:
        now = self.clock()
        for timed_out, attempt in domain.wake(doc, now):
            domain.step_failed(
                doc, timed_out, attempt, "timeout", "the step ran past timeout_s", now
            )
        domain.settle(doc, now)
        for plan in plans:
            if plan.hit is not None and plan.cache_key is not None:
                domain.use_cache(
                    doc, plan.name, plan.cache_key, plan.hit.properties, plan.hit.execution_id, now
                )
            elif plan.failure is not None:
                if domain.start_step(doc, plan.name, request=None, cache_key=None, now=now):
                    attempt = doc.steps[plan.name].attempt
                    domain.step_failed(doc, plan.name, attempt, "invalid_input", plan.failure, now)
            else:
                domain.start_step(
                    doc,
                    plan.name,
                    request=plan.request,
                    cache_key=plan.cache_key,
                    now=now,
                    callback_token=plan.token,
                    callback_payload=plan.payload,
                )
        domain.settle(doc, now)

    async def drive(self, execution_id: str) -> None:
        """Start what may start, publish the outbox; repeat while cache hits unlock more."""
        lock = self._locks.setdefault(execution_id, asyncio.Lock())
        async with lock:
            for _ in range(len((await self.execution(execution_id)).steps) + 2):
                current = await self.execution(execution_id)
                probe = current.model_copy(deep=True)
                domain.wake(probe, self.clock())
                ready = domain.settle(probe, self.clock())
                plans = [await asyncio.to_thread(self._plan, probe, name) for name in ready]
                updated = await self._update(execution_id, partial(self._apply, plans=plans))
                if updated is None:
                    return
                sent = await self._flush(updated)
                if not plans and not sent:
                    break
            latest = await self.execution(execution_id)
            if latest.status in domain.TERMINAL and not latest.outbox:
                await asyncio.to_thread(self.active.delete, execution_key(execution_id))
                self._locks.pop(execution_id, None)

    async def _flush(self, execution: Execution) -> int:
        """Publish the outbox in order, then forget what was sent (again after a crash: at least
        once; requests are idempotent by their deterministic job names)."""
        if not execution.outbox:
            return 0
        sent: set[str] = set()
        for item in execution.outbox:
            model = spec_for(item.type).model.model_validate(item.data)
            await self.platform.publish(model, correlation_id=execution.execution_id)
            sent.add(item.id)
        await self._update(
            execution.execution_id,
            lambda doc: setattr(doc, "outbox", [i for i in doc.outbox if i.id not in sent]),
        )
        return len(sent)

    async def sweep_once(self) -> None:
        """Wake due retries and timeouts, and publish outboxes a crash left behind."""
        for key in await asyncio.to_thread(self.active.keys):
            try:
                await self.drive(key.removesuffix(".json"))
            except NotFound:
                await asyncio.to_thread(self.active.delete, key)
            except Exception:
                log.exception("driving execution %s failed; the next sweep tries again", key)

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("the sweep failed; the next one tries again")
            await asyncio.sleep(self.config.sweep_interval_s)
