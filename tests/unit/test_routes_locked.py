"""Locked by default, enumerated: every route of every service refuses anonymous callers.

The routes are read from the services' own apps (OpenAPI plus the gateway's invocation fast
path), so a route added later is covered without editing this test.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from cairn.service import Service
from cairn.store.memory import InMemoryObjectStore
from fastapi.testclient import TestClient

from tests.support.auth import auth_settings, scoped_headers

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
SERVICES = sorted(p.name for p in SERVICES_DIR.iterdir() if (p / "app.py").exists())
PROBES = {"/healthz", "/readyz", "/metrics", "/ping"}
FAST_PATH_ROUTES = [("POST", "/endpoints/x/invocations"), ("POST", "/invocations")]


def _build(name: str, tmp_path: Path) -> tuple[Service, Any]:
    module = importlib.import_module(f"services.{name}.app")
    service: Service = module.create_service(
        settings=auth_settings(home=tmp_path), store=InMemoryObjectStore()
    )
    return service, service.asgi


def _routes(service: Service) -> list[tuple[str, str]]:
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in service.api.openapi()["paths"].items()
        for method in operations
        if path not in PROBES
    ]
    return routes + (FAST_PATH_ROUTES if service.name == "gateway" else [])


@pytest.mark.parametrize("name", SERVICES)
def test_anonymous_callers_get_401_on_every_route(name: str, tmp_path: Path) -> None:
    service, app = _build(name, tmp_path)
    client = TestClient(app)
    routes = _routes(service)
    assert routes, f"{name} has no routes"
    refused = {(m, p): client.request(m, p).status_code for m, p in routes}
    assert {route: code for route, code in refused.items() if code != 401} == {}
    for probe in ("/healthz", "/metrics"):
        assert client.get(probe).status_code == 200


@pytest.mark.parametrize("name", SERVICES)
def test_a_key_without_the_routes_scope_gets_403(name: str, tmp_path: Path) -> None:
    service, app = _build(name, tmp_path)
    client = TestClient(app)
    # `label` belongs to the labeling service, `device` to edge agents: each serves only its own.
    scope = "device" if name == "labeling" else "label"
    headers = scoped_headers(service.store, service.settings, [scope])
    refused = {
        (m, p): client.request(m, p, headers=headers).status_code for m, p in _routes(service)
    }
    assert {route: code for route, code in refused.items() if code != 403} == {}
