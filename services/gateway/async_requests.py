"""InvokeEndpointAsync's request rules, without I/O: SageMaker's headers in, the keys out.

An async request names its input (`X-Amzn-SageMaker-InputLocation`, or an inline body: the two
are exclusive, as in SageMaker) and gets an answer key and a failure key under its endpoint's
output and failure prefixes. The object name is `Filename` when given, else the inference id
(a hash of it when it is not a safe file name), so the inference id is the request's
idempotency key within those prefixes: a request whose answer or failure already exists is a
repeat, answered with the same locations and not queued again.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cairn.contracts.async_events import AsyncInferenceRequested
from cairn.errors import InvalidInput

H_INPUT_LOCATION = "x-amzn-sagemaker-inputlocation"
H_CONTENT_TYPE = "x-amzn-sagemaker-content-type"
H_ACCEPT = "x-amzn-sagemaker-accept"
H_CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
H_INFERENCE_ID = "x-amzn-sagemaker-inference-id"
H_REQUEST_TTL = "x-amzn-sagemaker-requestttlseconds"
H_INVOCATION_TIMEOUT = "x-amzn-sagemaker-invocationtimeoutseconds"
H_OUTPUT_EXTENSION = "x-amzn-sagemaker-s3outputpathextension"
H_FILENAME = "x-amzn-sagemaker-filename"

INPUT_LOCATION_FIELD = "X-Amzn-SageMaker-InputLocation"
DEFAULT_REQUEST_TTL_S = 6 * 3600
DEFAULT_INVOCATION_TIMEOUT_S = 900
INLINE_PREFIX = "uploads/async/"

_INFERENCE_ID = re.compile(r"\S[\x20-\x7e]{0,63}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_EXTENSION = re.compile(r"[a-zA-Z0-9!_.*'()/-]{1,512}")
_FILENAME = re.compile(r"(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}")


@dataclass(frozen=True, slots=True)
class AsyncHeaders:
    """What an InvokeEndpointAsync request asks for, checked."""

    input_location: str | None
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    inference_id: str
    request_ttl_s: int
    invocation_timeout_s: int
    output_extension: str
    filename: str | None


@dataclass(frozen=True, slots=True)
class AsyncKeys:
    """Where one request's input, answer and failure reason are (store keys)."""

    input_key: str
    output_key: str
    failure_key: str


def _bounded_int(headers: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = headers.get(name)
    if raw is None:
        return default
    label = _label(name)
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidInput(f"{label} must be a whole number of seconds, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{label} must be between {low} and {high} seconds, got {value}")
    return value


def _label(name: str) -> str:
    """A header's name as SageMaker documents it (`x-amzn-sagemaker-filename` -> `...-Filename`)."""
    tail = name.removeprefix("x-amzn-sagemaker-")
    known = {
        "inputlocation": "InputLocation",
        "requestttlseconds": "RequestTTLSeconds",
        "invocationtimeoutseconds": "InvocationTimeoutSeconds",
        "s3outputpathextension": "S3OutputPathExtension",
    }
    return "X-Amzn-SageMaker-" + known.get(tail, tail.title())


def _inference_id(raw: str | None, new_id: Callable[[], str]) -> str:
    if raw is None:
        return new_id()
    if not _INFERENCE_ID.fullmatch(raw):
        raise InvalidInput(
            f"{_label(H_INFERENCE_ID)} must be 1 to 64 printable characters, not starting with a "
            f"space: {raw[:80]!r}"
        )
    return raw


def _output_extension(raw: str | None) -> str:
    """`S3OutputPathExtension` as a relative folder (`a/b/`), never escaping the prefix."""
    if raw is None:
        return ""
    label = _label(H_OUTPUT_EXTENSION)
    if not _EXTENSION.fullmatch(raw) or raw.startswith(("s3:", "https:")):
        raise InvalidInput(f"{label} may hold only letters, digits and !_.*'()/-: {raw!r}")
    folder = raw.strip("/")
    if not folder or posixpath.normpath(folder) != folder or folder.split("/")[0] == "..":
        raise InvalidInput(f"{label} must be a plain relative path: {raw!r}")
    return folder + "/"


def _filename(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not _FILENAME.fullmatch(raw):
        raise InvalidInput(
            f"{_label(H_FILENAME)} must be up to 32 letters, digits, -, _ and at most one dot, "
            f"starting with a letter or digit: {raw!r}"
        )
    return raw


def parse_headers(headers: Mapping[str, str], new_id: Callable[[], str]) -> AsyncHeaders:
    """SageMaker's InvokeEndpointAsync headers (lower-case names), checked: 400 naming the bad one.

    Args:
        headers: the request's headers, names in lower case.
        new_id: makes the inference id of a request that names none.
    """
    location = (headers.get(H_INPUT_LOCATION) or "").strip()
    return AsyncHeaders(
        input_location=location or None,
        content_type=headers.get(H_CONTENT_TYPE),
        accept=headers.get(H_ACCEPT),
        custom_attributes=headers.get(H_CUSTOM_ATTRIBUTES),
        inference_id=_inference_id(headers.get(H_INFERENCE_ID), new_id),
        request_ttl_s=_bounded_int(headers, H_REQUEST_TTL, DEFAULT_REQUEST_TTL_S, 60, 21600),
        invocation_timeout_s=_bounded_int(
            headers, H_INVOCATION_TIMEOUT, DEFAULT_INVOCATION_TIMEOUT_S, 1, 3600
        ),
        output_extension=_output_extension(headers.get(H_OUTPUT_EXTENSION)),
        filename=_filename(headers.get(H_FILENAME)),
    )


def check_input(request: AsyncHeaders, body_bytes: int) -> None:
    """Exactly one input: an InputLocation or an inline body (SageMaker's rule)."""
    if request.input_location is None and body_bytes == 0:
        raise InvalidInput(
            f"give the input: {INPUT_LOCATION_FIELD} (an object in the store) or a request body"
        )
    if request.input_location is not None and body_bytes:
        raise InvalidInput(
            f"give {INPUT_LOCATION_FIELD} or a request body, not both", field=INPUT_LOCATION_FIELD
        )


def object_name(inference_id: str) -> str:
    """The inference id when it is a safe file name, else a stable hash of it."""
    if _SAFE_NAME.fullmatch(inference_id) and ".." not in inference_id:
        return inference_id
    return hashlib.sha256(inference_id.encode()).hexdigest()[:32]


def inline_input_key(endpoint_name: str, request: AsyncHeaders) -> str:
    """Where an inline body is stored before the request is queued."""
    name = object_name(request.inference_id)
    return f"{INLINE_PREFIX}{endpoint_name}/{request.output_extension}{name}.in"


def request_keys(
    request: AsyncHeaders, input_key: str, output_prefix: str, failure_prefix: str
) -> AsyncKeys:
    """The answer and failure keys of a request under its endpoint's prefixes."""
    stem = request.filename or object_name(request.inference_id)
    answer = request.filename or f"{stem}.out"
    extension = request.output_extension
    return AsyncKeys(
        input_key=input_key,
        output_key=f"{output_prefix}{extension}{answer}",
        failure_key=f"{failure_prefix}{extension}{stem}-error.out",
    )


def requested_event(
    endpoint_name: str, request: AsyncHeaders, keys: AsyncKeys, received_at: datetime
) -> AsyncInferenceRequested:
    """The work item queued for the async workers."""
    return AsyncInferenceRequested(
        inference_id=request.inference_id,
        endpoint_name=endpoint_name,
        input_key=keys.input_key,
        output_key=keys.output_key,
        failure_key=keys.failure_key,
        content_type=request.content_type,
        accept=request.accept,
        custom_attributes=request.custom_attributes,
        received_at=received_at,
        expires_at=received_at + timedelta(seconds=request.request_ttl_s),
        invocation_timeout_s=request.invocation_timeout_s,
    )
