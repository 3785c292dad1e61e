"""HTTP routes of the ingest service: decode the request, call `IngestHandlers`, answer."""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import requires
from cairn.contracts.events import (
    ColumnSchema,
    DatasetFormat,
    DatasetIngested,
    DatasetRegistrationRequested,
)
from cairn.datasets import DATASET_NAME_PATTERN, DatasetIndex, DatasetVersion
from cairn.errors import InvalidInput
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.ingest.domain import format_from_content_type
from services.ingest.handlers import DatasetSummary, IngestHandlers, UploadTicket

DatasetName = Annotated[str, PathParam(pattern=DATASET_NAME_PATTERN)]
VersionParam = Annotated[str, PathParam(pattern=r"^(latest|[1-9][0-9]*)$")]
_SCHEMA = TypeAdapter(list[ColumnSchema])
_ALREADY_STORED: dict[int | str, dict[str, Any]] = {
    200: {"description": "Identical content is already stored (created=false)."}
}


def get_ingest(request: Request) -> IngestHandlers:
    """The running service's handlers, set on the app by `create_service`."""
    handlers: IngestHandlers = request.app.state.ingest
    return handlers


Ingest = Annotated[IngestHandlers, Depends(get_ingest)]
READ = requires("read")

router = APIRouter(tags=["datasets"])


class RegisterRequest(BaseModel):
    """Body of POST /datasets/{name}/register."""

    source_uri: str = Field(description="Store prefix or key holding CSV, Parquet or JSON Lines.")
    format: DatasetFormat | None = None
    declared_schema: list[ColumnSchema] | None = None


class UploadUrlRequest(BaseModel):
    """Body of POST /datasets/{name}/upload-url."""

    filename: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="The file's name; its suffix names the format (.csv, .parquet, .jsonl).",
    )


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


def _answer(ingested: DatasetIngested, response: Response) -> DatasetIngested:
    response.status_code = 201 if ingested.created else 200
    return ingested


@router.post(
    "/datasets/{name}/upload",
    status_code=201,
    summary="Upload a CSV / Parquet / JSON Lines file as the streamed body.",
    description="Bodies over CAIRN_INGEST_MAX_UPLOAD_BYTES (default 2 GiB) are refused with "
    "413; send bigger files through POST /datasets/{name}/upload-url.",
    dependencies=[requires("data", action="dataset.upload")],
    responses=_ALREADY_STORED,
)
async def upload(
    name: DatasetName,
    request: Request,
    response: Response,
    ingest: Ingest,
    format: Annotated[DatasetFormat | None, Query(description="Overrides Content-Type.")] = None,
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
    ingested = await ingest.upload(name, request.stream(), source_format, declared)
    return _answer(ingested, response)


@router.post(
    "/datasets/{name}/upload-url",
    summary="A presigned URL to PUT a file bigger than the upload limit straight into the store.",
    description="PUT the file to `upload_url`, then POST `register_path` with "
    '`{"source_uri": ..., "format": ...}` from this answer. Only stores that sign URLs (S3, '
    "MinIO: up to 5 GiB per PUT); others answer 400 upload_url_unavailable.",
    dependencies=[requires("data", action="dataset.upload_url")],
)
async def upload_url(name: DatasetName, body: UploadUrlRequest, ingest: Ingest) -> UploadTicket:
    return await ingest.upload_url(name, body.filename)


@router.post(
    "/datasets/{name}/register",
    status_code=201,
    summary="Register the objects under a store prefix as a dataset version.",
    dependencies=[requires("data", action="dataset.register")],
    responses=_ALREADY_STORED,
)
async def register(
    name: DatasetName, body: RegisterRequest, response: Response, ingest: Ingest
) -> DatasetIngested:
    request = DatasetRegistrationRequested(dataset_name=name, **body.model_dump())
    return _answer(await ingest.register(request), response)


@router.get("/datasets", summary="Every dataset with its newest version.", dependencies=[READ])
async def list_all(ingest: Ingest) -> list[DatasetSummary]:
    return await ingest.list_datasets()


@router.get("/datasets/{name}", summary="A dataset's committed versions.", dependencies=[READ])
async def describe(name: DatasetName, ingest: Ingest) -> DatasetIndex:
    return await ingest.dataset(name)


@router.get(
    "/datasets/{name}/{version}",
    summary="One version's schema, profile and checksums.",
    dependencies=[READ],
)
async def describe_version(
    name: DatasetName, version: VersionParam, ingest: Ingest
) -> DatasetVersion:
    return await ingest.dataset_version(name, None if version == "latest" else int(version))
