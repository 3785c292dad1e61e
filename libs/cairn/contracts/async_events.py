"""Asynchronous inference (InvokeEndpointAsync): its endpoint config and events (owner: gateway).

An accepted request is stored input (an object in the store) plus one `AsyncInferenceRequested`
on the gateway's async work topic, consumed by the async worker pool's group. The worker writes
the answer to the request's output key (or the reason to its failure key), create-only, then
announces it with `AsyncInferenceCompleted` / `AsyncInferenceFailed`: Cairn's counterparts of
SageMaker's success and error notification topics.

The endpoint's `AsyncInferenceConfig` (SageMaker's, in snake case) lives in the deployer's
endpoint document and reaches the gateway through `EndpointStateView`. Its paths, and every
`InputLocation`, are store locations read by `location_key`:

- a bare key (`data/requests/1.csv`) or the store's own URI of one (`s3://<bucket>[/<prefix>]/key`
  on an S3 store, `file:///.../key` on the embedded one);
- on a store that is not S3 (the embedded folder, memory), `s3://cairn/<key>`: the embedded store
  answers to the one bucket name `cairn`, so a SageMaker client's `s3://` URIs name its keys.

Every location must lie in the store's user namespaces (`cairn.namespaces.confine`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from cairn.contracts.catalogue import event
from cairn.errors import InvalidInput
from cairn.namespaces import confine
from cairn.store.base import ObjectStore

EMBEDDED_BUCKET = "cairn"
_S3 = "s3://"
ENDPOINT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Endpoint config (deployer) -------------------------------------------------------------------


class AsyncInferenceClientConfig(_Data):
    """SageMaker's `AsyncInferenceClientConfig`."""

    max_concurrent_invocations_per_instance: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Invocations of this endpoint one async worker runs at once; default: as "
        "many as the worker runs (CAIRN_GATEWAY_ASYNC_CONCURRENCY).",
    )


class AsyncInferenceOutputConfig(_Data):
    """SageMaker's `AsyncInferenceOutputConfig`: where answers and failures are written.

    The notification topics are fixed: `AsyncInferenceCompleted` and `AsyncInferenceFailed`.
    """

    s3_output_path: str | None = Field(
        default=None,
        max_length=1024,
        description="Prefix of the answers; default outputs/async/<endpoint>/.",
    )
    s3_failure_path: str | None = Field(
        default=None,
        max_length=1024,
        description="Prefix of the failure reasons; default outputs/async/<endpoint>/failures/.",
    )

    @field_validator("s3_output_path", "s3_failure_path")
    @classmethod
    def _bare_keys_in_user_namespaces(cls, path: str | None, info: ValidationInfo) -> str | None:
        """A bare key is checked here; a URI needs the store, so the gateway checks it on use."""
        if path is None or "://" in path:
            return path
        try:
            confine(path, field=info.field_name or "path")
        except InvalidInput as error:
            raise ValueError(error.message) from None
        return path


class AsyncInferenceConfig(_Data):
    """SageMaker's `AsyncInferenceConfig` of an endpoint."""

    client_config: AsyncInferenceClientConfig = Field(default_factory=AsyncInferenceClientConfig)
    output_config: AsyncInferenceOutputConfig = Field(default_factory=AsyncInferenceOutputConfig)


def location_key(location: str, *, field: str, store: ObjectStore) -> str:
    """The store key a user-supplied location names, confined to the user namespaces.

    Raises:
        InvalidInput: another bucket or store, a path that escapes, or a key outside the user
            namespaces; the message names `field`.
    """
    stripped = location.strip()
    if stripped.startswith(_S3) and not store.url.startswith(_S3):
        bucket, _, key = stripped[len(_S3) :].partition("/")
        if bucket != EMBEDDED_BUCKET or not key:
            raise InvalidInput(
                f"{field}: {location!r} is not in this platform's object store (it answers to "
                f"s3://{EMBEDDED_BUCKET}/<key>)",
                field=field,
            )
        stripped = key
    return confine(stripped, field=field, store=store)


def location_prefix(location: str, *, field: str, store: ObjectStore) -> str:
    """`location_key` of a folder: the key, ending in `/`."""
    return location_key(location, field=field, store=store).rstrip("/") + "/"


def location_uri(key: str, store: ObjectStore) -> str:
    """The `s3://` URI clients see for a key: the store's own, or `s3://cairn/<key>`."""
    if store.url.startswith(_S3):
        return store.uri(key)
    return f"{_S3}{EMBEDDED_BUCKET}/{key}"


def async_prefixes(
    endpoint_name: str, config: AsyncInferenceConfig | None, store: ObjectStore
) -> tuple[str, str]:
    """The endpoint's output and failure prefixes (its config's, else the defaults)."""
    output = config.output_config if config is not None else AsyncInferenceOutputConfig()
    default = f"outputs/async/{endpoint_name}/"
    output_prefix = (
        location_prefix(output.s3_output_path, field="s3_output_path", store=store)
        if output.s3_output_path
        else default
    )
    failure_prefix = (
        location_prefix(output.s3_failure_path, field="s3_failure_path", store=store)
        if output.s3_failure_path
        else default + "failures/"
    )
    return output_prefix, failure_prefix


# Events (gateway) -----------------------------------------------------------------------------


@event(owner="gateway", key="inference_id", partitions=8, required_scope="admin")
class AsyncInferenceRequested(_Data):
    """An accepted InvokeEndpointAsync request (the async worker pool's work item)."""

    inference_id: str = Field(min_length=1, max_length=64)
    endpoint_name: str = Field(pattern=ENDPOINT_NAME_PATTERN)
    input_key: str = Field(description="The request body: a store key in a user namespace.")
    output_key: str = Field(description="Where the answer goes (create-only).")
    failure_key: str = Field(description="Where the failure reason goes (create-only).")
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = Field(default=None, max_length=1024)
    received_at: datetime
    expires_at: datetime = Field(description="RequestTTLSeconds after receipt: then it fails.")
    invocation_timeout_s: int = Field(default=900, ge=1, le=3600)


@event(owner="gateway", key="inference_id")
class AsyncInferenceCompleted(_Data):
    """An async request's answer is stored at `output_location` (the success notification)."""

    inference_id: str
    endpoint_name: str
    variant_name: str
    input_location: str
    output_location: str
    content_type: str
    received_at: datetime


AsyncFailureCode = Literal[
    "model_error", "endpoint_not_found", "input_not_found", "expired", "timeout", "internal"
]


@event(owner="gateway", key="inference_id")
class AsyncInferenceFailed(_Data):
    """An async request failed; `failure_location` holds the reason (the error notification)."""

    inference_id: str
    endpoint_name: str
    input_location: str
    failure_location: str
    reason: str
    failure_code: AsyncFailureCode = "internal"
    received_at: datetime
