"""Wiring of the feature store: event subscribers and HTTP routes; the logic lives in handlers.py.

Blocking work (object store, Parquet, DuckDB, bulk loads) runs in threads, so the event loop stays
free for online reads while data is loaded. GetRecord reads the online store inline: one indexed
SQLite row or one Redis round trip is cheaper than a hop to a thread (fastpath.py serves it).

Invalid records: PutRecord answers 400 naming the feature and the problem. A FeatureRecordsPut
event is split: its valid records are stored, its invalid ones are republished to the topic's DLQ
(only those records, reason in the `cairn-dlq-error` header) and counted, with their reasons, in
FeatureIngestionCompleted. A bulk load counts and reports bad rows the same way. An event that is
not a valid FeatureRecordsPut at all (or names no group) is dead-lettered whole by the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from cairn.bus import DLQ_ERROR, DLQ_GROUP, DLQ_REASON
from cairn.bus.publish import envelope_for, outgoing_message
from cairn.contracts.catalogue import spec_for
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    FeatureGroupCreationRequested,
    FeatureIngestionCompleted,
    FeatureIngestionRequested,
    FeatureRecordsPut,
    TrainingSetBuilt,
    TrainingSetRequested,
)
from cairn.errors import InvalidInput
from cairn.http import require_api_key
from cairn.offline import OfflineStore
from cairn.online import OnlineStore, open_online_store
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from fastapi import APIRouter, Depends, FastAPI, Query, Response
from pydantic import BaseModel, Field

from services.featurestore import handlers
from services.featurestore.config import FeatureStoreSettings
from services.featurestore.domain import FeatureGroup, parse_timestamp, record_from_sagemaker
from services.featurestore.fastpath import install_fast_path
from services.featurestore.handlers import BatchGetItem, FeatureStore, IngestResult, TrainingSetDoc

SOURCE = "featurestore"
REASON_INVALID_RECORDS = "invalid-records"


class IngestBody(BaseModel):
    dataset_uri: str = Field(description="dataset://name@version")


class BatchGetIdentifier(BaseModel):
    feature_group_name: str
    record_identifiers: list[str] = Field(min_length=1)
    feature_names: list[str] | None = None


class BatchGetBody(BaseModel):
    identifiers: list[BatchGetIdentifier] = Field(min_length=1)


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status_code,
        media_type="application/json",
    )


def _features(features: str | None) -> list[str] | None:
    if features is None:
        return None
    return [name.strip() for name in features.split(",") if name.strip()]


def _time(value: str, what: str) -> datetime:
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise InvalidInput(f"{what} must be ISO 8601 or epoch seconds: {exc}") from None


class FeatureStoreApp:
    """The running service's state: opened on start-up so importing the module touches nothing."""

    def __init__(self, service: Service, config: FeatureStoreSettings) -> None:
        self.service = service
        self.config = config
        self._fs: FeatureStore | None = None

    def current(self) -> FeatureStore | None:
        """The feature store while the service runs, else None."""
        return self._fs

    @property
    def fs(self) -> FeatureStore:
        if self._fs is None:
            raise RuntimeError("the feature store is used before the service started")
        return self._fs

    def open(self, online: OnlineStore | None) -> None:
        home = self.service.settings.home
        online = online or open_online_store(self.config.resolved_online_url(home))
        offline = OfflineStore(
            self.service.store,
            self.config.offline_prefix,
            cache_dir=self.config.resolved_cache_dir(home),
        )
        self._fs = FeatureStore(self.service.store, online, offline)

    def close(self) -> None:
        if self._fs is not None:
            self._fs.online.close()
            self._fs = None

    async def create_group(
        self, request: FeatureGroupCreationRequested, cause: Envelope[Any] | None = None
    ) -> tuple[FeatureGroup, bool]:
        group, created = await asyncio.to_thread(handlers.create_group, self.fs, request)
        # Published on a repeat too: the first attempt may have died before publishing.
        await self.service.publish(group.created_event(), cause=cause)
        return group, created

    async def report(
        self, group_name: str, source: str, result: IngestResult, cause: Envelope[Any] | None
    ) -> None:
        await self.service.publish(
            FeatureIngestionCompleted(
                feature_group_name=group_name,
                records_written=result.records_written,
                records_rejected=result.records_rejected,
                source=source,
                rejections=result.reasons(),
            ),
            cause=cause,
        )

    async def dead_letter_rejected(
        self, envelope: Envelope[FeatureRecordsPut], result: IngestResult
    ) -> None:
        """Dead-letter only the invalid records, with their reasons; the valid ones are stored."""
        data = envelope.data
        rejected = FeatureRecordsPut(
            feature_group_name=data.feature_group_name,
            records=[data.records[r.index] for r in result.rejections],
        )
        message = outgoing_message(
            envelope_for(rejected, source=SOURCE, cause=envelope),
            {
                DLQ_REASON: REASON_INVALID_RECORDS,
                DLQ_ERROR: "; ".join(result.reasons())[:2000],
                DLQ_GROUP: self.config.consumer_group,
            },
        )
        await self.service.broker.publish(
            message.value,
            spec_for(FeatureRecordsPut).dlq_topic,
            key=message.key,
            headers=message.headers,
        )

    async def build_training_set(
        self, request: TrainingSetRequested, cause: Envelope[Any] | None = None
    ) -> TrainingSetDoc:
        doc = await asyncio.to_thread(handlers.build_training_set, self.fs, request)
        await self.service.publish(
            TrainingSetBuilt(
                training_set_name=request.training_set_name,
                dataset_uri=doc.dataset_uri,
                row_count=doc.row_count,
            ),
            cause=cause,
        )
        return doc


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: FeatureStoreSettings | None = None,
    online: OnlineStore | None = None,
) -> Service:
    """The feature store service; tests may pass their own store and online store."""
    config = config or FeatureStoreSettings()
    service = Service(SOURCE, settings=settings, store=store)
    state = FeatureStoreApp(service, config)
    service.api.state.featurestore = state
    _wrap_lifespan(service.api, state, online)
    _subscribe(service, state, config)
    service.api.include_router(_group_routes(state, config))
    service.api.include_router(_training_set_routes(state))
    install_fast_path(service.api, state.current, SOURCE)
    return service


def _wrap_lifespan(api: FastAPI, state: FeatureStoreApp, online: OnlineStore | None) -> None:
    inner = api.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        state.open(online)
        try:
            async with inner(app) as lifespan_state:
                yield lifespan_state
        finally:
            state.close()

    api.router.lifespan_context = lifespan


def _subscribe(service: Service, state: FeatureStoreApp, config: FeatureStoreSettings) -> None:
    group = config.consumer_group

    @service.on(FeatureGroupCreationRequested, group=f"{group}.feature-group-creation-requested")
    async def on_creation(envelope: Envelope[FeatureGroupCreationRequested]) -> None:
        await state.create_group(envelope.data, cause=envelope)

    @service.on(FeatureRecordsPut, group=f"{group}.feature-records-put")
    async def on_records(envelope: Envelope[FeatureRecordsPut]) -> None:
        data = envelope.data
        result = await asyncio.to_thread(
            handlers.ingest_records,
            state.fs,
            data.feature_group_name,
            data.records,
            f"event-{envelope.event_id}",
        )
        if result.rejections:
            await state.dead_letter_rejected(envelope, result)
        await state.report(data.feature_group_name, f"event:{envelope.event_id}", result, envelope)

    @service.on(FeatureIngestionRequested, group=f"{group}.feature-ingestion-requested")
    async def on_ingestion(envelope: Envelope[FeatureIngestionRequested]) -> None:
        data = envelope.data
        result = await asyncio.to_thread(
            handlers.ingest_dataset,
            state.fs,
            data.feature_group_name,
            data.dataset_uri,
            f"bulk-{envelope.event_id}",
            config.bulk_batch_rows,
        )
        await state.report(data.feature_group_name, data.dataset_uri, result, envelope)

    @service.on(TrainingSetRequested, group=f"{group}.training-set-requested")
    async def on_training_set(envelope: Envelope[TrainingSetRequested]) -> None:
        await state.build_training_set(envelope.data, cause=envelope)


def _group_routes(state: FeatureStoreApp, config: FeatureStoreSettings) -> APIRouter:
    routes = APIRouter(tags=["featurestore"], dependencies=[Depends(require_api_key)])

    @routes.post("/feature-groups", status_code=201)
    async def create_group(body: FeatureGroupCreationRequested, response: Response) -> FeatureGroup:
        group, created = await state.create_group(body)
        response.status_code = 201 if created else 200
        return group

    @routes.get("/feature-groups")
    async def list_groups() -> dict[str, list[FeatureGroup]]:
        return {"feature_groups": await asyncio.to_thread(handlers.list_groups, state.fs)}

    @routes.get("/feature-groups/{name}")
    async def describe_group(name: str) -> FeatureGroup:
        return await asyncio.to_thread(state.fs.group, name)

    @routes.put("/feature-groups/{name}/records")
    async def put_record(name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PutRecord: `{"Record": [{"FeatureName", "ValueAsString"}]}` or `{"record": {...}}`."""
        record = record_from_sagemaker(body)
        result = await asyncio.to_thread(handlers.put_record, state.fs, name, record)
        return {"feature_group_name": name, "stored_online": result.records_stored_online == 1}

    @routes.get("/feature-groups/{name}/records/{record_id}")
    async def get_record(name: str, record_id: str, features: str | None = None) -> Response:
        """GetRecord: the latest live record (404 when missing, deleted or expired)."""
        if not state.fs.has_cached_group(name):
            await asyncio.to_thread(state.fs.group, name)
        return _json(handlers.get_record(state.fs, name, record_id, _features(features)))

    @routes.delete("/feature-groups/{name}/records/{record_id}")
    async def delete_record(
        name: str, record_id: str, event_time: Annotated[str, Query()]
    ) -> dict[str, Any]:
        moment = _time(event_time, "event_time")
        deleted = await asyncio.to_thread(handlers.delete_record, state.fs, name, record_id, moment)
        return {"feature_group_name": name, "record_identifier": record_id, "deleted": deleted}

    @routes.post("/batch-get-record")
    async def batch_get_record(body: BatchGetBody) -> Response:
        total = sum(len(item.record_identifiers) for item in body.identifiers)
        if total > config.max_batch_get:
            raise InvalidInput(f"at most {config.max_batch_get} identifiers per request")
        items = [
            BatchGetItem(i.feature_group_name, i.record_identifiers, i.feature_names)
            for i in body.identifiers
        ]
        return _json(await asyncio.to_thread(handlers.batch_get, state.fs, items))

    @routes.post("/feature-groups/{name}/ingest", status_code=202)
    async def ingest(name: str, body: IngestBody) -> dict[str, str]:
        """Bulk load: queued as FeatureIngestionRequested; FeatureIngestionCompleted reports it."""
        await asyncio.to_thread(state.fs.group, name)
        envelope = await state.service.publish(
            FeatureIngestionRequested(feature_group_name=name, dataset_uri=body.dataset_uri)
        )
        return {"event_id": str(envelope.event_id), "correlation_id": envelope.correlation_id}

    @routes.get("/feature-groups/{name}/as-of")
    async def as_of(
        name: str,
        ts: str,
        as_of_known_time: bool = False,
        limit: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        """Time travel: every record's latest live values with event time <= ts."""
        moment = _time(ts, "ts")
        rows = min(limit or config.max_as_of_rows, config.max_as_of_rows)
        body = await asyncio.to_thread(
            handlers.state_as_of, state.fs, name, moment, as_of_known_time, rows
        )
        return _json(body)

    return routes


def _training_set_routes(state: FeatureStoreApp) -> APIRouter:
    routes = APIRouter(
        prefix="/training-sets", tags=["featurestore"], dependencies=[Depends(require_api_key)]
    )

    @routes.post("", status_code=201)
    async def build(body: TrainingSetRequested) -> TrainingSetDoc:
        """Build a point-in-time correct training set now; repeating the request reuses it."""
        return await state.build_training_set(body)

    @routes.get("/{name}")
    async def describe(name: str) -> TrainingSetDoc:
        return await asyncio.to_thread(handlers.describe_training_set, state.fs, name)

    return routes


__getattr__ = lazy_service(create_service)
