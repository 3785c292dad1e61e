"""The Cairn SDK: the platform's HTTP APIs as one Python object (`from cairn_sdk import Client`).

It needs only httpx and the kernel's settings and errors: no numpy, pandas or model libraries.
"""

from __future__ import annotations

from cairn_sdk.client import Client
from cairn_sdk.credentials import API_KEY_ENV, resolve_token, split_token
from cairn_sdk.errors import EndpointFailed, ServiceNotConfigured, error_from_response
from cairn_sdk.gateway import Invocation
from cairn_sdk.urls import SERVICES, ServiceName, service_url, service_urls

__all__ = [
    "API_KEY_ENV",
    "SERVICES",
    "Client",
    "EndpointFailed",
    "Invocation",
    "ServiceName",
    "ServiceNotConfigured",
    "error_from_response",
    "resolve_token",
    "service_url",
    "service_urls",
    "split_token",
]
