"""The edge service on the real broker and S3 server, with agents in threads: a registered XGBoost
model is compiled with treelite, signed, fetched over presigned S3 URLs, verified, served on
loopback with the original's answers; events, captures and every refusal are real."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from cairn.artifacts import load_model
from cairn.contracts.catalogue import spec_for
from cairn.contracts.edge_events import (
    EdgeDeploymentCompleted,
    EdgeDeploymentRolledBack,
    EdgePackagingJobCompleted,
)
from cairn.contracts.state import ModelVersionView, write_state
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore
from cairn_edge.agent import Agent, AgentOptions, Credential

from services.edge.app import create_service
from services.edge.config import EdgeSettings
from tests.support.auth import scoped_headers
from tests.support.http_server import served
from tests.support.tansu import unique_name
from tests.unit.test_batch_transform import make_batch_model
from tests.unit.test_edge_drift import make_trained_model, rows_like_training

pytestmark = pytest.mark.integration
HANG_GUARD_S = 90.0


@pytest.fixture
def settings(kafka_settings: CairnSettings, s3_settings: CairnSettings) -> CairnSettings:
    return kafka_settings.model_copy(
        update={
            "store_url": s3_settings.store_url,
            "s3_endpoint": s3_settings.s3_endpoint,
            "s3_access_key": s3_settings.s3_access_key,
            "s3_secret_key": s3_settings.s3_secret_key,
        }
    )


@pytest.fixture
async def edge(
    settings: CairnSettings, s3_store: ObjectStore
) -> AsyncIterator[tuple[Service, str]]:
    config = EdgeSettings(sweep_interval_s=0.2, drift_check_interval_s=0.5)
    service = create_service(settings, s3_store, config)
    async with served(service.asgi, "edge") as url:
        yield service, url


def register_model(store: ObjectStore) -> tuple[str, str]:
    group = unique_name("edgemodel")
    uri = make_batch_model(store, f"models/{group}/1/", trees=20)
    write_state(
        store,
        ModelVersionView(
            model_package_group=group, version=1, artifact_uri=uri, approval_status="Approved"
        ),
        group,
        "1",
    )
    return group, uri


async def until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def agents_running(
    url: str, credentials: list[Credential], root: Path, upload_s: float = 3600
) -> AsyncIterator[list[Agent]]:
    """Agents in threads; they are joined off the event loop, which serves the edge service."""
    agents = [
        Agent(
            credential,
            AgentOptions(
                server=url,
                folder=root / credential.device_name,
                capture_rate=1.0,
                heartbeat_s=0.3,
                upload_s=upload_s,
                poll_wait_s=2.0,
            ),
        )
        for credential in credentials
    ]
    threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
    for thread in threads:
        thread.start()
    try:
        yield agents
    finally:
        for agent in agents:
            agent.stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)


async def events_of(settings: CairnSettings, model: Any, key: str, value: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        spec_for(model).topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: list[Any] = []
        deadline = time.monotonic() + HANG_GUARD_S
        while not found and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    envelope = json.loads(record.value)
                    if envelope["data"].get(key) == value:
                        found.append(envelope)
        return found
    finally:
        await consumer.stop()


async def test_a_compiled_package_rolls_out_and_serves_the_original_answers(
    edge: tuple[Service, str], settings: CairnSettings, s3_store: ObjectStore, tmp_path: Path
) -> None:
    service, url = edge
    group, uri = register_model(s3_store)
    headers = scoped_headers(s3_store, service.settings, ["deploy", "read"])
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as api:
        fleet = unique_name("fleet")
        assert (await api.post("/fleets", json={"fleet_name": fleet})).status_code == 201
        credentials = []
        for device in ("d0", "d1", "d2"):
            answer = await api.post(f"/fleets/{fleet}/devices", json={"device_name": device})
            assert answer.status_code == 201, answer.text
            credentials.append(Credential.model_validate(answer.json()))

        created = await api.post(
            "/packages", json={"model_package_group": group, "model_version": 1}
        )
        assert created.status_code == 202, created.text
        name = created.json()["package_name"]

        async def packaged() -> dict[str, Any] | None:
            doc = (await api.get(f"/packages/{name}")).json()
            return doc if doc["status"] != "InProgress" else None

        package = await until(packaged, "the package is built")
        assert package["status"] == "Completed", package
        assert package["format"] == "treelite" and package["size_bytes"] > 0
        assert package["max_abs_error"] <= package["tolerance"]
        assert await events_of(settings, EdgePackagingJobCompleted, "package_name", name)
        no_training_data = await api.post(
            "/deployments",
            json={
                "plan_name": unique_name("plan"),
                "fleet_name": fleet,
                "package_name": name,
                "stages": ["all=percent:100"],
                "gates": ["drift"],
            },
        )
        assert no_training_data.status_code == 422, no_training_data.text
        assert "lineage names none" in no_training_data.json()["error"]

        async with agents_running(url, credentials, tmp_path) as agents:
            plan = {
                "plan_name": unique_name("plan"),
                "fleet_name": fleet,
                "package_name": name,
                "stages": ["canary=devices:d1", "rest=percent:100"],
                "bake_s": 0.5,
                "gates": ["error-rate:0.5"],
            }
            assert (await api.post("/deployments", json=plan)).status_code == 201

            async def completed() -> dict[str, Any] | None:
                doc = (await api.get(f"/deployments/{plan['plan_name']}")).json()
                return doc if doc["status"] != "InProgress" else None

            finished = await until(completed, "the plan ends")
            assert finished["status"] == "Completed", finished
            assert [s["assigned"] for s in finished["stages"]] == [["d1"], ["d0", "d2"]]
            done = await events_of(
                settings, EdgeDeploymentCompleted, "plan_name", plan["plan_name"]
            )
            assert done[0]["data"]["status"] == "Completed"

            rows = np.random.default_rng(3).normal(size=(5, 3)).astype(np.float32)
            expected = load_model(s3_store, uri).predict(rows)
            body = "\n".join(",".join(map(str, row)) for row in rows.tolist())
            async with httpx.AsyncClient() as local:
                for agent in agents:
                    answer = await local.post(
                        f"http://127.0.0.1:{agent.port}/invocations",
                        content=body,
                        headers={"Content-Type": "text/csv"},
                    )
                    values = [float(v) for v in answer.text.split()]
                    np.testing.assert_allclose(values, expected, atol=1e-4)
            assert await asyncio.to_thread(agents[0].upload_pending) == 1
            captured = list(s3_store.list(f"edge/captures/{fleet}/d0/"))
            assert len(captured) == 1 and captured[0].key.endswith(".jsonl")


async def built(api: httpx.AsyncClient, group: str) -> str:
    created = await api.post(
        "/packages", json={"model_package_group": group, "model_version": 1, "format": "native"}
    )
    assert created.status_code == 202, created.text
    name: str = created.json()["package_name"]

    async def packaged() -> dict[str, Any] | None:
        doc = (await api.get(f"/packages/{name}")).json()
        return doc if doc["status"] != "InProgress" else None

    assert (await until(packaged, f"{name} is built"))["status"] == "Completed"
    return name


async def deployed(api: httpx.AsyncClient, plan: dict[str, Any]) -> dict[str, Any]:
    created = await api.post("/deployments", json=plan)
    assert created.status_code == 201, created.text

    async def ended() -> dict[str, Any] | None:
        doc = (await api.get(f"/deployments/{plan['plan_name']}")).json()
        return doc if doc["status"] not in ("InProgress", "Paused") else None

    result: dict[str, Any] = await until(ended, f"plan {plan['plan_name']} ends")
    return result


async def serving(agents: list[Agent], package: str) -> bool:
    return all(a.runtime.serving and a.runtime.serving.package_name == package for a in agents)


async def invoke(agent: Agent, rows: list[list[Any]]) -> None:
    body = "\n".join(",".join(map(str, row)) for row in rows)
    async with httpx.AsyncClient() as local:
        answer = await local.post(
            f"http://127.0.0.1:{agent.port}/invocations",
            content=body,
            headers={"Content-Type": "text/csv"},
        )
    assert answer.status_code == 200, answer.text


async def test_a_drift_gated_stage_whose_devices_see_shifted_inputs_is_rolled_back(
    edge: tuple[Service, str], settings: CairnSettings, s3_store: ObjectStore, tmp_path: Path
) -> None:
    """The canary's devices see inputs like the training data and pass the drift gate; the wave's
    see ages shifted by 30 years: their captured rows drift, and exactly they go back."""
    service, url = edge
    group = unique_name("drifty")
    make_trained_model(s3_store, group)
    headers = scoped_headers(s3_store, service.settings, ["deploy", "read"])
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as api:
        fleet = unique_name("fleet")
        assert (await api.post("/fleets", json={"fleet_name": fleet})).status_code == 201
        credentials = []
        for device in ("d0", "d1", "d2"):
            answer = await api.post(f"/fleets/{fleet}/devices", json={"device_name": device})
            credentials.append(Credential.model_validate(answer.json()))
        first, second = await built(api, group), await built(api, group)

        async with agents_running(url, credentials, tmp_path, upload_s=0.3) as agents:
            base = {"fleet_name": fleet, "package_name": first, "bake_s": 0}
            plan = base | {"plan_name": unique_name("base"), "stages": ["all=percent:100"]}
            assert (await deployed(api, plan))["status"] == "Completed"
            await until(lambda: serving(agents, first), "every device runs the first build")

            plan = {
                "plan_name": unique_name("drift"),
                "fleet_name": fleet,
                "package_name": second,
                "stages": ["canary=devices:d0", "wave=devices:d1,d2:bake=1"],
                "bake_s": 0.5,
                "stage_deadline_s": HANG_GUARD_S,
                "gates": ["drift:0.05:100"],
            }
            ending = asyncio.create_task(deployed(api, plan))
            await until(lambda: serving(agents[:1], second), "the canary runs the second build")
            await invoke(agents[0], rows_like_training(150, seed=11))
            await until(lambda: serving(agents[1:], second), "the wave runs the second build")
            for seed, agent in enumerate(agents[1:], start=14):  # seeds: the others hold
                await invoke(agent, rows_like_training(60, seed=seed, age_shift=30))
            finished = await ending
            await until(lambda: serving(agents[1:], first), "the wave runs the first build again")
            assert await serving(agents[:1], second)

        assert finished["status"] == "RolledBack", finished
        canary, wave = finished["stages"]
        assert canary["status"] == "Completed"
        assert canary["drift"]["samples"] == 150 and canary["drift"]["devices"] == ["d0"]
        assert not [f for f in canary["drift"]["features"] if f["drifted"]], canary["drift"]
        assert wave["status"] == "RolledBack"
        assert wave["drift"]["samples"] >= 100
        assert "drift gate" in wave["reason"] and "age (ks" in wave["reason"], wave["reason"]
        assert {f["feature"] for f in wave["drift"]["features"] if f["drifted"]} == {"age"}

        devices = {
            d["device_name"]: d
            for d in (await api.get(f"/fleets/{fleet}/devices")).json()["devices"]
        }
        assert devices["d0"]["desired"]["package_name"] == second
        for name in ("d1", "d2"):
            assert devices[name]["desired"] | {"revision": 0} == {
                "revision": 0, "package_name": first, "rollback": True,
                "plan_name": plan["plan_name"],
            }  # fmt: skip
        rolled = await events_of(settings, EdgeDeploymentRolledBack, "plan_name", plan["plan_name"])
        assert rolled[0]["data"]["devices"] == ["d1", "d2"]


async def test_bad_input_is_refused_with_the_reason_and_audited(
    edge: tuple[Service, str], s3_store: ObjectStore
) -> None:
    service, url = edge
    admin = scoped_headers(s3_store, service.settings, ["admin"])
    async with httpx.AsyncClient(base_url=url, headers=admin, timeout=30) as api:
        fleet, other = unique_name("fleet"), unique_name("fleet")
        for name in (fleet, other):
            await api.post("/fleets", json={"fleet_name": name})
        token = (await api.post(f"/fleets/{fleet}/devices", json={"device_name": "d0"})).json()[
            "token"
        ]
        await api.post(f"/fleets/{other}/devices", json={"device_name": "d0"})

        unknown = await api.post(
            "/packages", json={"model_package_group": "nope", "model_version": 9}
        )
        assert unknown.status_code == 404 and "not registered" in unknown.json()["error"]

        device = {"Authorization": f"Bearer {token}"}
        elsewhere = await api.get(f"/fleets/{other}/devices/d0/desired", headers=device)
        assert elsewhere.status_code == 403 and "is not device" in elsewhere.json()["error"]

        never = await api.post(
            f"/fleets/{fleet}/devices/d0/heartbeat",
            headers=device,
            json={"agent_version": "t", "package_name": "forged-package"},
        )
        assert never.status_code == 409 and "never sent" in never.json()["error"]

        decreasing = await api.post(
            "/deployments",
            json={
                "plan_name": unique_name("plan"),
                "fleet_name": fleet,
                "package_name": "whatever",
                "stages": ["a=percent:50", "b=percent:20"],
            },
        )
        assert decreasing.status_code == 400, decreasing.text
        assert "must not decrease" in decreasing.json()["error"]

        audit = (await api.get("/admin/audit", params={"action": "edge_device.desired"})).json()
        assert any(r["outcome"] == "denied" for r in audit["records"])
        audit = (await api.get("/admin/audit", params={"action": "edge_device.heartbeat"})).json()
        assert any("never sent" in r["details"]["reason"] for r in audit["records"])
