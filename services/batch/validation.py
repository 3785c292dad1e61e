"""Checks on a transform request before anything runs; every refusal names its field (400)."""

from __future__ import annotations

from dataclasses import dataclass

from cairn.auth import Principal
from cairn.contracts.batch_events import TransformJobRequested
from cairn.errors import Forbidden, InvalidInput
from cairn.inference import media_type
from cairn.namespaces import confine, confine_channel
from cairn.store.base import ObjectStore

from services.batch.domain import (
    ACCEPT_TYPES,
    CONTENT_TYPES,
    CSV,
    IMAGE_TYPES,
    JSON,
    JSONLINES,
    MAX_PAYLOAD_PRODUCT_MB,
    PARQUET,
    PNG,
    TEXT,
)
from services.batch.jsonpath import JsonPath, parse_jsonpath

OUTPUTS_NAMESPACE = "outputs/"


@dataclass(frozen=True)
class Plan:
    """A request that passed the checks: normalised types and locations, parsed filters."""

    request: TransformJobRequested
    content_type: str
    accept: str
    input_location: str
    output_prefix: str
    input_filter: JsonPath
    output_filter: JsonPath

    @property
    def join(self) -> bool:
        return self.request.data_processing.join_source == "Input"


def checked(request: TransformJobRequested, store: ObjectStore | None) -> Plan:
    """The request, normalised (content types, store keys); InvalidInput names the bad field."""
    content_type = _content_type(request.transform_input.content_type, "content_type")
    accept_type = request.transform_output.accept or _default_accept(content_type)
    accept = _content_type(accept_type, "accept")
    _check_combination(request, content_type, accept)
    processing = request.data_processing
    input_filter = parse_jsonpath(processing.input_filter, field="data_processing.input_filter")
    output_filter = parse_jsonpath(processing.output_filter, field="data_processing.output_filter")
    if content_type == PARQUET:
        _check_column_filter(input_filter, "data_processing.input_filter")
    if accept == PARQUET:
        _check_column_filter(output_filter, "data_processing.output_filter")
    return Plan(
        request=request,
        content_type=content_type,
        accept=accept,
        input_location=confine_channel(
            request.transform_input.data_source, field="transform_input.data_source", store=store
        ),
        output_prefix=_output_prefix(request.transform_output.output_path, store),
        input_filter=input_filter,
        output_filter=output_filter,
    )


def check_invoke(principal: Principal, endpoint_name: str) -> None:
    """A job against an endpoint needs the requester's `invoke` on it (403): a transform job is
    no way around an endpoint-bound key."""
    if not principal.allows("invoke", endpoint_name):
        raise Forbidden(
            f"key {principal.key_id or principal.name} may not invoke endpoint {endpoint_name!r}: "
            "a transform job against an endpoint needs the requester's invoke scope on it",
            required_scope="invoke",
            endpoint_name=endpoint_name,
        )


def _default_accept(content_type: str) -> str:
    """The input's own type, but images are answered in JSON and text lines in JSON Lines."""
    if content_type in IMAGE_TYPES:
        return JSON
    return JSONLINES if content_type == TEXT else content_type


def _content_type(value: str, name: str) -> str:
    normalised = media_type(value, default="")
    allowed = CONTENT_TYPES if name == "content_type" else ACCEPT_TYPES
    if normalised not in allowed:
        owner = "transform_input" if name == "content_type" else "transform_output"
        raise InvalidInput(
            f"{owner}.{name}: {value!r} is not supported; use {', '.join(allowed)}",
            field=f"{owner}.{name}",
            supported=list(allowed),
        )
    return normalised


def _check_combination(request: TransformJobRequested, content_type: str, accept: str) -> None:
    if request.max_payload_mb * request.max_concurrent_transforms > MAX_PAYLOAD_PRODUCT_MB:
        raise InvalidInput(
            f"max_payload_mb: {request.max_payload_mb} MB x max_concurrent_transforms "
            f"{request.max_concurrent_transforms} is over {MAX_PAYLOAD_PRODUCT_MB} MB",
            field="max_payload_mb",
        )
    images = content_type in IMAGE_TYPES
    if images and accept not in (JSON, JSONLINES, PNG):
        raise InvalidInput(
            "transform_output.accept: image inputs are answered in application/json, "
            "application/jsonlines or (segmentation masks) image/png",
            field="transform_output.accept",
        )
    if not images and accept in (JSON, PNG):
        raise InvalidInput(
            f"transform_output.accept: {accept} answers whole image files; records are written "
            "as text/csv, application/jsonlines or application/x-parquet",
            field="transform_output.accept",
        )
    if images and request.endpoint_name is not None:
        raise InvalidInput(
            "transform_input.content_type: image inputs are scored with a registered model "
            "(model_package_group, model_version), not through an endpoint",
            field="transform_input.content_type",
        )
    if images and request.data_processing.join_source == "Input":
        raise InvalidInput(
            "data_processing.join_source: an image cannot be joined to its answer",
            field="data_processing.join_source",
        )
    if accept == PARQUET and content_type != PARQUET:
        raise InvalidInput(
            "transform_output.accept: Parquet output needs Parquet input",
            field="transform_output.accept",
        )
    if content_type == PARQUET and request.transform_input.compression_type != "None":
        raise InvalidInput(
            "transform_input.compression_type: Parquet compresses itself; use None",
            field="transform_input.compression_type",
        )
    joined = request.data_processing.join_source == "Input"
    if joined and accept == CSV and content_type != CSV:
        raise InvalidInput(
            "data_processing.join_source: joining to CSV output needs CSV input",
            field="data_processing.join_source",
        )
    if request.transform_input.csv_header and content_type != CSV:
        raise InvalidInput(
            "transform_input.csv_header: only CSV input has a header line",
            field="transform_input.csv_header",
        )


def _check_column_filter(path: JsonPath, field: str) -> None:
    """Parquet records are rows of named columns: a filter picks columns, nothing deeper."""
    if path.is_identity:
        return
    if len(path.steps) == 1 and path.steps[0].kind in ("name", "names"):
        return
    raise InvalidInput(
        f"{field}: {path.text!r}: on Parquet a filter selects columns: $, $.name or $['a','b']",
        field=field,
    )


def _output_prefix(location: str, store: ObjectStore | None) -> str:
    field = "transform_output.output_path"
    key = confine(location, field=field, store=store)
    if not (key.rstrip("/") + "/").startswith(OUTPUTS_NAMESPACE) or key.rstrip("/") == "outputs":
        raise InvalidInput(
            f"{field}: {location!r}: batch outputs go under {OUTPUTS_NAMESPACE}<name>/",
            field=field,
        )
    return key.rstrip("/")
