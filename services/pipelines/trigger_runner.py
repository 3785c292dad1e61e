"""Triggers at work: a consumer group reads the event types triggers name; schedules come due.

The reader subscribes to the topics of the event types that triggers name and follows changes to
the triggers (re-subscribing), starting at the earliest offset of a new topic and ignoring events
older than the trigger. An event starts an execution whose id is derived from the trigger and the
event's `event_id`, created only if absent: a redelivered or re-published event starts nothing new.
Offsets are committed after the executions are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from cairn.auth.principal import Principal
from cairn.auth.scopes import SCOPES
from cairn.bus.broker import kafka_client_options
from cairn.contracts.catalogue import decode_envelope, spec_for
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.pipeline_events import PipelineTriggerChanged, PipelineTriggerFired
from cairn.documents import DocumentStore
from cairn.errors import CairnError, Conflict, Forbidden, NotFound, PreconditionFailed
from cairn.ports import Platform
from cairn.settings import CairnSettings

from services.pipelines.config import PipelinesSettings
from services.pipelines.handlers import PipelineHandlers
from services.pipelines.properties import DEPLOY_STEPS
from services.pipelines.triggers import (
    TRIGGERS,
    Trigger,
    TriggerRequest,
    due_time,
    execution_id_for,
    make_trigger,
    matches,
    names_of,
    parameters_for,
)

log = logging.getLogger("cairn.pipelines.triggers")
_RETRY_S = 1.0


class TriggerRunner:
    def __init__(
        self,
        handlers: PipelineHandlers,
        settings: CairnSettings,
        config: PipelinesSettings,
        platform: Platform,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.handlers = handlers
        self.settings = settings
        self.config = config
        self.platform = platform
        self.clock = clock
        self.triggers: DocumentStore[Trigger] = DocumentStore(handlers.store, Trigger, TRIGGERS)

    # Control plane ---------------------------------------------------------------------------

    async def add(
        self, pipeline_name: str, request: TriggerRequest, principal: Principal
    ) -> Trigger:
        pipeline = await self.handlers.describe(pipeline_name)
        if any(s.type in DEPLOY_STEPS for s in pipeline.definition.steps) and not principal.allows(
            "deploy"
        ):
            raise Forbidden(
                "the pipeline has Deploy or Transform steps: the deploy scope is needed"
            )
        trigger = make_trigger(request, pipeline_name, principal.name, self.clock())
        try:
            await asyncio.to_thread(self.triggers.create, f"{trigger.trigger_name}.json", trigger)
        except PreconditionFailed:
            raise Conflict(f"trigger {trigger.trigger_name!r} exists") from None
        await self.platform.publish(
            PipelineTriggerChanged(
                trigger_name=trigger.trigger_name,
                pipeline_name=pipeline_name,
                action="added",
                changed_by=principal.name,
            )
        )
        return trigger

    async def remove(self, trigger_name: str, principal: Principal) -> Trigger:
        found = await asyncio.to_thread(self.triggers.get_or_none, f"{trigger_name}.json")
        if found is None:
            raise NotFound(f"no trigger {trigger_name!r}")
        await asyncio.to_thread(self.triggers.delete, f"{trigger_name}.json")
        await self.platform.publish(
            PipelineTriggerChanged(
                trigger_name=trigger_name,
                pipeline_name=found.doc.pipeline_name,
                action="removed",
                changed_by=principal.name,
            )
        )
        return found.doc

    async def all(self) -> list[Trigger]:
        return [item.doc for item in await asyncio.to_thread(self.triggers.list)]

    # Firing ----------------------------------------------------------------------------------

    async def _fire(self, trigger: Trigger, params: dict[str, Any], occurrence: str) -> None:
        principal = Principal(
            name=f"trigger:{trigger.trigger_name}",
            key_id="",
            scopes=frozenset(SCOPES),
            kind="service",
        )
        try:
            execution, created = await self.handlers.start(
                trigger.pipeline_name,
                params,
                principal,
                execution_id=execution_id_for(trigger.trigger_name, occurrence),
                trigger_name=trigger.trigger_name,
            )
        except CairnError as error:
            log.warning(
                "trigger %s could not start %s: %s",
                trigger.trigger_name,
                trigger.pipeline_name,
                error.message,
            )
            return
        if created:
            await self.platform.publish(
                PipelineTriggerFired(
                    trigger_name=trigger.trigger_name,
                    pipeline_name=trigger.pipeline_name,
                    execution_id=execution.execution_id,
                    event_type=trigger.event_type,
                    event_id=occurrence,
                ),
                correlation_id=execution.execution_id,
            )

    async def on_event(self, envelope: Envelope[Any], triggers: list[Trigger]) -> None:
        names = names_of(envelope)
        for trigger in triggers:
            if trigger.event_type != envelope.type or envelope.occurred_at < trigger.created_at:
                continue
            if not matches(trigger, names):
                continue
            try:
                params = parameters_for(trigger, names)
            except KeyError as missing:
                log.warning("trigger %s: the event has no %s", trigger.trigger_name, missing)
                continue
            await self._fire(trigger, params, str(envelope.event_id))

    async def fire_schedules(self) -> None:
        now = self.clock()
        for trigger in await self.all():
            due = due_time(trigger, now)
            if due is None:
                continue
            await self._fire(trigger, dict(trigger.parameters), due.isoformat())
            with contextlib.suppress(NotFound, PreconditionFailed):
                await asyncio.to_thread(
                    self.triggers.update,
                    f"{trigger.trigger_name}.json",
                    partial(_with_due, due=due),
                )

    async def schedules_forever(self) -> None:
        while True:
            try:
                await self.fire_schedules()
            except Exception:
                log.exception("firing schedules failed; trying again")
            await asyncio.sleep(self.config.sweep_interval_s)

    # The reader ------------------------------------------------------------------------------

    async def read_forever(self) -> None:
        """Subscribe to the triggering topics, follow trigger changes, start executions; a lost
        broker or store is waited out (the reader starts again from the committed offsets)."""
        while True:
            try:
                await self._read_session()
            except (KafkaError, CairnError, OSError) as error:
                log.warning("the trigger reader stopped (%r); starting it again", error)
                await asyncio.sleep(_RETRY_S)

    async def _read_session(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings, client_id="cairn-pipelines-triggers"),
            group_id=self.config.trigger_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.bus_session_timeout_ms,
            heartbeat_interval_ms=min(
                self.settings.bus_heartbeat_interval_ms, self.settings.bus_session_timeout_ms // 3
            ),
        )
        await consumer.start()
        topics: frozenset[str] = frozenset()
        triggers: list[Trigger] = []
        refreshed = 0.0
        try:
            while True:
                loop_now = asyncio.get_running_loop().time()
                if loop_now - refreshed >= self.config.trigger_refresh_s:
                    triggers = [t for t in await self.all() if t.event_type is not None]
                    wanted = frozenset(
                        spec_for(t.event_type).topic for t in triggers if t.event_type
                    )
                    refreshed = loop_now
                    if wanted != topics:
                        topics = wanted
                        if topics:
                            consumer.subscribe(sorted(topics))
                        else:
                            consumer.unsubscribe()
                if not topics:
                    await asyncio.sleep(self.config.trigger_refresh_s)
                    continue
                try:
                    await self._read_batch(consumer, triggers)
                except Exception:
                    log.exception("handling triggering events failed; reading them again")
                    await asyncio.sleep(_RETRY_S)
                    with contextlib.suppress(KafkaError, AssertionError):
                        await consumer.seek_to_committed()
        finally:
            await consumer.stop()

    async def _read_batch(self, consumer: AIOKafkaConsumer, triggers: list[Trigger]) -> None:
        try:
            batches = await consumer.getmany(timeout_ms=500)
        except KafkaError as error:
            log.warning("reading triggering events failed, retrying: %r", error)
            await asyncio.sleep(_RETRY_S)
            return
        for records in batches.values():
            for record in records:
                if record.value is None:
                    continue
                try:
                    envelope = decode_envelope(record.value)
                except CairnError:
                    continue  # someone else's bad message: its own consumers dead-letter it
                await self.on_event(envelope, triggers)
        if batches:
            with contextlib.suppress(KafkaError):
                await consumer.commit()


def _with_due(doc: Trigger | None, due: datetime) -> Trigger:
    if doc is None:
        raise NotFound("trigger removed")
    return doc.model_copy(update={"last_due_at": due})
