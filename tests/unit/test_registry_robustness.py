"""Non-finite metrics are refused, and a stored version that no longer loads is reported, never
a 500 (issue 18)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cairn.store.memory import InMemoryObjectStore

from services.registry.app import create_service
from tests.support.auth import admin_headers, auth_settings
from tests.unit.test_registry_handlers import Recorder, write_manifest


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, InMemoryObjectStore]]:
    store = InMemoryObjectStore("registry-robust")
    settings = auth_settings(home=tmp_path)
    service = create_service(settings=settings, store=store)
    service.api.state.registry.publish = Recorder()
    write_manifest(store, "models/hand/")
    transport = httpx.ASGITransport(app=service.api)
    headers = admin_headers(store, settings, name="root")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://registry", headers=headers
    ) as client:
        yield client, store


@pytest.mark.parametrize("metric", [b"1e309", b"-Infinity", b"NaN"])
async def test_a_non_finite_metric_is_refused_with_its_field(
    api: tuple[httpx.AsyncClient, InMemoryObjectStore], metric: bytes
) -> None:
    client, _ = api

    refused = await client.post(
        "/model-package-groups/credit/versions",
        content=b'{"artifact_uri": "models/hand/", "metrics": {"auc": ' + metric + b"}}",
        headers={"content-type": "application/json"},
    )

    assert refused.status_code == 422, refused.text
    assert "metrics.auc" in refused.json()["error"] and "finite" in refused.json()["error"]
    assert (await client.get("/model-package-groups/credit")).status_code == 404


async def test_a_stored_version_with_a_null_metric_is_reported_and_skipped(
    api: tuple[httpx.AsyncClient, InMemoryObjectStore],
) -> None:
    client, store = api
    for _ in range(2):
        created = await client.post(
            "/model-package-groups/credit/versions", json={"artifact_uri": "models/hand/"}
        )
        assert created.status_code == 201, created.text
    key = "registry/groups/credit/versions/1.json"
    doc = json.loads(store.get_bytes(key))
    doc["metrics"] = {"auc": None}  # what a 1e309 metric left behind before it was refused
    store.put_bytes(key, json.dumps(doc).encode())

    listed = await client.get("/model-package-groups/credit/versions")
    got = await client.get("/model-package-groups/credit/versions/1")
    approve = await client.post(
        "/model-package-groups/credit/versions/1/approval", json={"status": "Approved"}
    )

    assert [v["version"] for v in listed.json()] == [2]
    assert got.status_code == 409 and got.json()["code"] == "model_version_unreadable"
    assert "metrics.auc" in got.json()["error"]
    assert approve.status_code == 409
    assert (await client.get("/model-package-groups/credit/versions/2")).status_code == 200
