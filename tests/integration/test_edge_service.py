"""The edge service on the real broker and S3 server, with agents in threads: a registered XGBoost
model is compiled with treelite, signed, fetched over presigned S3 URLs, verified, served on
loopback with the original's answers; events, captures and every refusal are real."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from cairn.artifacts import load_model
from cairn.contracts.catalogue import spec_for
from cairn.contracts.edge_events import EdgeDeploymentCompleted, EdgePackagingJobCompleted
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
    service = create_service(settings, s3_store, EdgeSettings(sweep_interval_s=0.2))
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


@contextlib.contextmanager
def agents_running(url: str, credentials: list[Credential], root: Path) -> Iterator[list[Agent]]:
    agents = [
        Agent(
            credential,
            AgentOptions(
                server=url,
                folder=root / credential.device_name,
                capture_rate=1.0,
                heartbeat_s=0.3,
                upload_s=3600,
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
            thread.join(timeout=30)


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

        with agents_running(url, credentials, tmp_path) as agents:
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
