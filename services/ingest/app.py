"""Wiring of the ingest service: the registration event, upload/register routes, dataset reads."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    ColumnSchema,
    DatasetFormat,
    DatasetIngested,
    DatasetRegistrationRequested,
    DatasetRejected,
)
from cairn.datasets import (
    DATASET_NAME_PATTERN,
    DatasetIndex,
    DatasetVersion,
    get_dataset_index,
    get_dataset_version,
    list_datasets,
)
from cairn.errors import InvalidInput
from cairn.http import require_api_key
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.ingest.config import IngestSettings
from services.ingest.domain import format_from_content_type
from services.ingest.handlers import UPLOAD_LABEL, ingest_upload, register_from_store

DatasetName = Annotated[str, PathParam(pattern=DATASET_NAME_PATTERN)]
_SCHEMA = TypeAdapter(list[ColumnSchema])
REGISTRATION_MAX_S = 3600


class RegisterRequest(BaseModel):
    """Body of POST /datasets/{name}/register."""

    source_uri: str = Field(description="Store prefix or key holding CSV, Parquet or JSON Lines.")
    format: DatasetFormat | None = None
    declared_schema: list[ColumnSchema] | None = None


class DatasetSummary(BaseModel):
    name: str
    versions: int
    latest_version: int
    latest_sha256: str
    latest_row_count: int


def _declared_schema(raw: str | None) -> list[ColumnSchema] | None:
    if not raw:
        return None
    try:
        return _SCHEMA.validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput(
            "schema must be a JSON list of {name, dtype, nullable}",
            errors=exc.errors(include_url=False, include_context=False),
        ) from exc


async def _spool(request: Request, path: Path) -> int:
    """Write the streamed body to a file chunk by chunk; never holds the whole upload."""
    received = 0
    with path.open("wb") as handle:
        async for chunk in request.stream():
            # Chunks are small (~64 KiB); a local write is quicker than a thread hop.
            handle.write(chunk)
            received += len(chunk)
    return received


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    ingest_settings: IngestSettings | None = None,
) -> Service:
    """The ingest service with its event handler and HTTP routes."""
    config = ingest_settings or IngestSettings()
    service = Service(
        "ingest", settings=settings, store=store, max_body_bytes=config.max_upload_bytes
    )
    router = APIRouter(dependencies=[Depends(require_api_key)], tags=["datasets"])

    async def run_ingest(
        dataset_name: str,
        source_uri: str,
        work: Callable[[], DatasetIngested],
        cause: Envelope[Any] | None = None,
    ) -> DatasetIngested:
        """Run the blocking ingest in a thread; publish what happened, then answer."""
        try:
            ingested = await asyncio.to_thread(work)
        except InvalidInput as exc:
            rejected = DatasetRejected(
                dataset_name=dataset_name, source_uri=source_uri, reason=exc.message
            )
            await service.publish(rejected, cause=cause)
            raise
        await service.publish(ingested, cause=cause)
        return ingested

    # A large prefix can take longer than aiokafka's default 5-minute poll interval.
    @service.on(DatasetRegistrationRequested, max_poll_interval_ms=REGISTRATION_MAX_S * 1000)
    async def on_registration(envelope: Envelope[DatasetRegistrationRequested]) -> None:
        request = envelope.data
        # A rejection is an answer, not a failure: it is published and the offset committed.
        with contextlib.suppress(InvalidInput):
            await run_ingest(
                request.dataset_name,
                request.source_uri,
                lambda: register_from_store(service.store, request, work_dir=config.work_dir),
                cause=envelope,
            )

    @router.post(
        "/datasets/{name}/upload",
        status_code=201,
        summary="Upload a CSV / Parquet / JSON Lines file as the streamed body.",
        responses={200: {"description": "Identical content is already stored (created=false)."}},
    )
    async def upload(
        name: DatasetName,
        request: Request,
        response: Response,
        format: Annotated[
            DatasetFormat | None, Query(description="Overrides Content-Type.")
        ] = None,
        schema: Annotated[
            str | None, Query(description="Declared schema: JSON list of {name, dtype, nullable}.")
        ] = None,
    ) -> DatasetIngested:
        declared = _declared_schema(schema)
        content_type = request.headers.get("content-type")
        source_format = format or format_from_content_type(content_type)
        if source_format is None:
            raise InvalidInput(
                f"cannot tell the format from Content-Type {content_type!r}: send text/csv, "
                "application/x-parquet or application/jsonlines, or ?format=",
            )
        with tempfile.TemporaryDirectory(dir=config.work_dir, prefix="cairn-upload-") as spool:
            path = Path(spool) / f"upload.{source_format}"
            await _spool(request, path)
            ingested = await run_ingest(
                name,
                UPLOAD_LABEL,
                lambda: ingest_upload(
                    service.store, name, path, source_format, declared, work_dir=config.work_dir
                ),
            )
        response.status_code = 201 if ingested.created else 200
        return ingested

    @router.post(
        "/datasets/{name}/register",
        status_code=201,
        summary="Register the objects under a store prefix as a dataset version.",
        responses={200: {"description": "Identical content is already stored (created=false)."}},
    )
    async def register(
        name: DatasetName, body: RegisterRequest, response: Response
    ) -> DatasetIngested:
        request = DatasetRegistrationRequested(dataset_name=name, **body.model_dump())
        ingested = await run_ingest(
            name,
            body.source_uri,
            lambda: register_from_store(service.store, request, work_dir=config.work_dir),
        )
        response.status_code = 201 if ingested.created else 200
        return ingested

    @router.get("/datasets", summary="Every dataset with its newest version.")
    async def list_all() -> list[DatasetSummary]:
        indexes = await asyncio.to_thread(list_datasets, service.store)
        return [_summary(index) for index in indexes]

    @router.get("/datasets/{name}", summary="A dataset's committed versions.")
    async def describe(name: DatasetName) -> DatasetIndex:
        return await asyncio.to_thread(get_dataset_index, service.store, name)

    @router.get(
        "/datasets/{name}/{version}", summary="One version's schema, profile and checksums."
    )
    async def describe_version(
        name: DatasetName,
        version: Annotated[str, PathParam(pattern=r"^(latest|[1-9][0-9]*)$")],
    ) -> DatasetVersion:
        number = None if version == "latest" else int(version)
        return await asyncio.to_thread(get_dataset_version, service.store, name, number)

    service.api.include_router(router)
    return service


def _summary(index: DatasetIndex) -> DatasetSummary:
    latest = index.latest
    assert latest is not None  # list_datasets returns only datasets with a committed version
    return DatasetSummary(
        name=index.name,
        versions=len(index.versions),
        latest_version=latest.version,
        latest_sha256=latest.sha256,
        latest_row_count=latest.row_count,
    )


__getattr__ = lazy_service(create_service)
