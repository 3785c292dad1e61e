"""A service's error answer as the `cairn.errors` class it stands for."""

from __future__ import annotations

from typing import Any

import httpx
from cairn.errors import (
    CairnError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unauthenticated,
    Unavailable,
)

_BY_STATUS: dict[int, type[CairnError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: InvalidInput,
    422: InvalidInput,
    424: InvalidInput,  # SageMaker's ModelError: the model refused the input
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


class ServiceNotConfigured(InvalidInput):
    """The client was asked for a service it has no URL for."""

    code = "service_not_configured"


class EndpointFailed(CairnError):
    """An endpoint ended Failed (or was deleted) while we waited for it to serve."""

    code = "endpoint_failed"


def error_from_response(response: httpx.Response) -> CairnError:
    """The `cairn.errors` class a service's error answer stands for, with its message and code."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = response.text.strip()[:500] or response.reason_phrase
    code = None
    details: dict[str, Any] = {}
    if isinstance(body, dict):
        message = str(body.get("error") or body.get("message") or message)
        code = body.get("code")
        if isinstance(body.get("details"), dict):
            details = body["details"]
    error_class = _BY_STATUS.get(response.status_code, CairnError)
    error = error_class(message, status=response.status_code, **details)
    if isinstance(code, str):
        # The service's precise code (endpoint_not_found, ...) shadows the class's generic one.
        vars(error)["code"] = code
    return error
