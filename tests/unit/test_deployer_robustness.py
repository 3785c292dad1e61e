"""One bad request or one bad stored document must not break an endpoint (issue 18)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cairn.contracts.events import DeploymentRequested, EndpointMetricsReported, VariantSpec
from cairn.contracts.state import EndpointStateView, list_states
from cairn.store.memory import InMemoryObjectStore

from services.deployer.app import create_service
from services.deployer.handlers import Deployer
from tests.support.auth import admin_headers, auth_settings
from tests.unit.test_deployer_handlers import Clock, Recorder, envelope, known, variant

Api = tuple[httpx.AsyncClient, Deployer, Recorder, Clock]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = InMemoryObjectStore("deployer-robust")
    settings = auth_settings(home=tmp_path)
    service = create_service(settings=settings, store=store)
    deployer: Deployer = service.api.state.deployer
    recorder, clock = Recorder(), Clock()
    deployer.publish, deployer.clock = recorder, clock
    await known(deployer, 1, 2)
    transport = httpx.ASGITransport(app=service.api)
    headers = admin_headers(store, settings, name="root")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://deployer", headers=headers
    ) as client:
        yield client, deployer, recorder, clock


async def _create(client: httpx.AsyncClient, name: str) -> None:
    body = {"endpoint_name": name, "production_variants": [variant(1, "a"), variant(2, "b")]}
    created = await client.post("/endpoints", json=body)
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("weight", [b"1e309", b"-1e309", b"NaN", b"Infinity"])
async def test_a_non_finite_weight_is_refused_and_the_endpoint_keeps_working(
    api: Api, weight: bytes
) -> None:
    client, _, _, _ = api
    await _create(client, "credit-risk")

    refused = await client.post(
        "/endpoints/credit-risk/weights",
        content=b'{"variants": [{"variant_name": "a", "weight": ' + weight + b"}]}",
        headers={"content-type": "application/json"},
    )

    assert refused.status_code == 422, refused.text
    assert "variants.0.weight" in refused.json()["error"]
    assert "finite number" in refused.json()["error"]
    got = await client.get("/endpoints/credit-risk")
    assert got.status_code == 200
    assert [v["weight"] for v in got.json()["production_variants"]] == [1.0, 1.0]
    assert [e["endpoint_name"] for e in (await client.get("/endpoints")).json()] == ["credit-risk"]
    changed = await client.post(
        "/endpoints/credit-risk/weights", json={"variants": [{"variant_name": "a", "weight": 3}]}
    )
    assert changed.status_code == 200, changed.text


async def test_non_finite_numbers_in_an_endpoint_config_or_policy_are_refused(api: Api) -> None:
    client, _, _, _ = api
    inf_bake = (
        b'{"endpoint_name": "live", "production_variants": [{"variant_name": "a", '
        b'"model_package_group": "credit", "model_version": 1, "initial_weight": 1e999}], '
        b'"rollout": {"mode": "canary", "bake_time_s": 1e999}}'
    )

    create = await client.post(
        "/endpoints", content=inf_bake, headers={"content-type": "application/json"}
    )
    policy = await client.put(
        "/auto-deploy/credit",
        content=b'{"endpoint_name": "live", "rollout": {"max_p99_latency_ms": NaN}}',
        headers={"content-type": "application/json"},
    )

    assert create.status_code == 422 and "bake_time_s" in create.json()["error"]
    assert policy.status_code == 422 and "max_p99_latency_ms" in policy.json()["error"]
    assert (await client.get("/endpoints/live")).status_code == 404
    assert (await client.get("/auto-deploy/credit")).status_code == 404


async def test_an_invalid_endpoint_name_in_the_path_is_a_400_naming_the_field(api: Api) -> None:
    client, _, _, _ = api

    put = await client.put("/endpoints/bad_name", json={"production_variants": [variant(1)]})

    assert put.status_code == 400, put.text
    assert put.json()["code"] == "invalid_input"
    assert "endpoint_name" in put.json()["error"]
    assert (await client.get("/endpoints/bad_name")).status_code == 404


def _null_weight(deployer: Deployer, name: str) -> None:
    """What a `1e309` weight left behind before it was refused: `null` in the stored document."""
    key = f"deployer/endpoints/{name}.json"
    doc = json.loads(deployer.store.get_bytes(key))
    doc["production_variants"][0]["weight"] = None
    deployer.store.put_bytes(key, json.dumps(doc).encode())


async def test_a_stored_endpoint_with_a_null_weight_is_reported_skipped_and_can_be_replaced(
    api: Api,
) -> None:
    client, deployer, recorder, clock = api
    await _create(client, "broken")
    await _create(client, "healthy")
    _null_weight(deployer, "broken")

    listed = await client.get("/endpoints")
    assert listed.status_code == 200
    assert [e["endpoint_name"] for e in listed.json()] == ["healthy"]
    got = await client.get("/endpoints/broken")
    assert got.status_code == 409
    assert got.json()["code"] == "endpoint_document_unreadable"
    assert "production_variants.0.weight" in got.json()["error"]
    put = await client.put("/endpoints/broken", json={"production_variants": [variant(2)]})
    assert put.status_code == 409 and put.json()["code"] == "endpoint_document_unreadable"
    weights = await client.post(
        "/endpoints/broken/weights", json={"variants": [{"variant_name": "a", "weight": 2}]}
    )
    assert weights.status_code == 409
    clock.now += timedelta(hours=1)
    await deployer.tick()  # the rollout driver passes over it
    assert [e.endpoint_name for e in list_states(deployer.store, EndpointStateView)] == ["healthy"]

    deleted = await client.delete("/endpoints/broken")
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["status"], deleted.json()["revision"]) == ("Deleted", 2)
    assert [(u.revision, u.status) for u in recorder.updates("broken")][-1] == (2, "Deleted")
    recreated = await client.post(
        "/endpoints", json={"endpoint_name": "broken", "production_variants": [variant(1)]}
    )
    assert recreated.status_code == 201, recreated.text
    assert recreated.json()["revision"] == 3
    assert (await client.get("/endpoints/broken")).status_code == 200


async def test_traffic_reports_for_an_unreadable_endpoint_are_skipped_not_retried(
    api: Api,
) -> None:
    _, deployer, recorder, _ = api
    await deployer.deploy(
        DeploymentRequested(endpoint_name="broken", production_variants=[VariantSpec(**variant(1))])
    )
    _null_weight(deployer, "broken")
    before = len(recorder.events)

    await deployer.on_metrics(
        envelope(EndpointMetricsReported(endpoint_name="broken", window_s=60))
    )

    assert len(recorder.events) == before


async def test_an_unreadable_auto_deploy_policy_is_reported_and_can_be_put_again(
    api: Api,
) -> None:
    client, deployer, _, _ = api
    put = await client.put("/auto-deploy/credit", json={"endpoint_name": "live"})
    assert put.status_code == 200, put.text
    key = "deployer/auto-deploy/credit.json"
    doc = json.loads(deployer.store.get_bytes(key))
    doc["rollout"]["bake_time_s"] = None  # a 1e309 bake time, before it was refused
    deployer.store.put_bytes(key, json.dumps(doc).encode())

    got = await client.get("/auto-deploy/credit")
    again = await client.put("/auto-deploy/credit", json={"endpoint_name": "live"})

    assert got.status_code == 409 and got.json()["code"] == "auto_deploy_policy_unreadable"
    assert "rollout.bake_time_s" in got.json()["error"]
    assert again.status_code == 200, again.text
    assert (await client.get("/auto-deploy/credit")).json()["rollout"]["bake_time_s"] == 60.0
    deployer.store.put_bytes(key, json.dumps(doc).encode())
    assert (await client.delete("/auto-deploy/credit")).status_code == 204
    assert (await client.get("/auto-deploy/credit")).status_code == 404
