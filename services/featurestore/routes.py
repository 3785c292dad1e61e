"""HTTP routes of the feature store: decode the request, call `FeatureStoreHandlers`, answer.

Cached-group GetRecord requests are answered before FastAPI by fastpath.py; the route below serves
the rest (a group not cached yet) with the same answer.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from cairn.auth import requires, set_audit_resource
from cairn.contracts.events import FeatureGroupCreationRequested, TrainingSetRequested
from cairn.errors import InvalidInput
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.featurestore.domain import FeatureGroup, parse_timestamp
from services.featurestore.handlers import FeatureStoreHandlers
from services.featurestore.operations import BatchGetItem, TrainingSetDoc


def get_feature_store(request: Request) -> FeatureStoreHandlers:
    """The running service's handlers, set on the app by `create_service`."""
    handlers: FeatureStoreHandlers = request.app.state.featurestore
    return handlers


Features = Annotated[FeatureStoreHandlers, Depends(get_feature_store)]
READ = requires("read")

groups = APIRouter(tags=["featurestore"])
training_sets = APIRouter(prefix="/training-sets", tags=["featurestore"])


class _Body(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)


class IngestBody(_Body):
    dataset_uri: str = Field(description="dataset://name@version")


class BatchGetIdentifier(_Body):
    feature_group_name: str
    record_identifiers: list[str] = Field(min_length=1)
    feature_names: list[str] | None = None


class BatchGetBody(_Body):
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


# Groups and records ----------------------------------------------------------------------------


@groups.post(
    "/feature-groups",
    status_code=201,
    dependencies=[requires("data", action="feature_group.create")],
)
async def create_group(
    body: FeatureGroupCreationRequested, request: Request, response: Response, fs: Features
) -> FeatureGroup:
    set_audit_resource(request, f"/feature-groups/{body.feature_group_name}")
    group, created = await fs.create_group(body)
    response.status_code = 201 if created else 200
    return group


@groups.get("/feature-groups", dependencies=[READ])
async def list_groups(fs: Features) -> dict[str, list[FeatureGroup]]:
    return {"feature_groups": await fs.list_groups()}


@groups.get("/feature-groups/{name}", dependencies=[READ])
async def describe_group(name: str, fs: Features) -> FeatureGroup:
    return await fs.group(name)


# The hot data path: a record write is not a control-plane change, so it is not audited.
@groups.put("/feature-groups/{name}/records", dependencies=[requires("data", audit=False)])
async def put_record(name: str, body: dict[str, Any], fs: Features) -> dict[str, Any]:
    """PutRecord: `{"Record": [{"FeatureName", "ValueAsString"}]}` or `{"record": {...}}`."""
    return await fs.put_record(name, body)


# `:path`: a record id may hold `/` (sent as %2F), as PutRecord and BatchGet accept it.
@groups.get("/feature-groups/{name}/records/{record_id:path}", dependencies=[READ])
async def get_record(
    name: str, record_id: str, fs: Features, features: str | None = None
) -> Response:
    """GetRecord: the latest live record (404 when missing, deleted or expired)."""
    return _json(await fs.get_record(name, record_id, _features(features)))


@groups.delete(
    "/feature-groups/{name}/records/{record_id:path}",
    dependencies=[requires("data", action="feature_record.delete")],
)
async def delete_record(
    name: str, record_id: str, event_time: Annotated[str, Query()], fs: Features
) -> dict[str, Any]:
    return await fs.delete_record(name, record_id, _time(event_time, "event_time"))


@groups.post("/batch-get-record", dependencies=[READ])
async def batch_get_record(body: BatchGetBody, fs: Features) -> Response:
    items = [
        BatchGetItem(i.feature_group_name, i.record_identifiers, i.feature_names)
        for i in body.identifiers
    ]
    return _json(await fs.batch_get(items))


@groups.post(
    "/feature-groups/{name}/ingest",
    status_code=202,
    dependencies=[requires("data", action="feature_group.ingest")],
)
async def ingest(name: str, body: IngestBody, fs: Features) -> dict[str, str]:
    """Bulk load: queued as FeatureIngestionRequested; FeatureIngestionCompleted reports it."""
    envelope = await fs.request_ingestion(name, body.dataset_uri)
    return {"event_id": str(envelope.event_id), "correlation_id": envelope.correlation_id}


@groups.get("/feature-groups/{name}/as-of", dependencies=[READ])
async def as_of(
    name: str,
    ts: str,
    fs: Features,
    as_of_known_time: bool = False,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """Time travel: every record's latest live values with event time <= ts."""
    return _json(await fs.state_as_of(name, _time(ts, "ts"), as_of_known_time, limit))


# Training sets ---------------------------------------------------------------------------------


@training_sets.post(
    "", status_code=201, dependencies=[requires("data", action="training_set.create")]
)
async def build_training_set(
    body: TrainingSetRequested, request: Request, fs: Features
) -> TrainingSetDoc:
    """Build a point-in-time correct training set now; repeating the request reuses it."""
    set_audit_resource(request, f"/training-sets/{body.training_set_name}")
    return await fs.build_training_set(body)


@training_sets.get("/{name}", dependencies=[READ])
async def describe_training_set(name: str, fs: Features) -> TrainingSetDoc:
    return await fs.describe_training_set(name)
