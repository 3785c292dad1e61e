"""The training-jobs API behind the kernel's guard: scopes, audit, and confined locations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cairn.audit import list_audit_records
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import TrainingJobRequested
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import InMemoryObjectStore
from pydantic import BaseModel

from services.trainer.app import create_service
from services.trainer.config import TrainerSettings
from tests.support.auth import auth_settings, scoped_headers


@dataclass
class Rig:
    service: Service
    store: InMemoryObjectStore
    settings: CairnSettings
    client: httpx.AsyncClient
    published: list[BaseModel]

    def requests(self) -> list[TrainingJobRequested]:
        return [e for e in self.published if isinstance(e, TrainingJobRequested)]

    def headers(self, *scopes: Any, name: str = "tester") -> dict[str, str]:
        return scoped_headers(self.store, self.settings, list(scopes), name=name)


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    store = InMemoryObjectStore()
    settings = auth_settings(store_url="memory://trainer-routes")
    service = create_service(settings, store, TrainerSettings(worker_id="w1"))
    published: list[BaseModel] = []

    async def publish(
        data: BaseModel, cause: Envelope[Any] | None = None, correlation_id: str | None = None
    ) -> Envelope[Any]:
        published.append(data)
        return Envelope[Any](
            type=type(data).__name__, source="trainer", correlation_id="c", data=data
        )

    monkeypatch.setattr(service, "publish", publish)  # no broker in unit tests (audit uses it too)
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://trainer") as client:
        yield Rig(service, store, settings, client, published)


def body(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "job_name": "job-1",
        "algorithm": "xgboost",
        "input_channels": [{"name": "train", "uri": "data/credit/train.csv"}],
    }
    return fields | overrides


async def test_anonymous_callers_get_401_and_nothing_is_created(rig: Rig) -> None:
    for method, path in [
        ("POST", "/training-jobs"),
        ("GET", "/training-jobs"),
        ("GET", "/training-jobs/job-1"),
        ("GET", "/training-jobs/job-1/logs"),
    ]:
        response = await rig.client.request(method, path, json=body())
        assert response.status_code == 401, (method, path)
    assert not rig.store.exists("trainer/jobs/job-1.json") and not rig.requests()


async def test_a_read_key_lists_jobs_but_cannot_create_one(rig: Rig) -> None:
    reader = rig.headers("read")
    assert (await rig.client.get("/training-jobs", headers=reader)).json() == {"training_jobs": []}
    refused = await rig.client.post("/training-jobs", json=body(), headers=reader)
    assert refused.status_code == 403
    assert not rig.store.exists("trainer/jobs/job-1.json") and not rig.requests()


async def test_a_train_key_creates_a_job_and_the_create_is_audited(rig: Rig) -> None:
    created = await rig.client.post(
        "/training-jobs", json=body(), headers=rig.headers("train", name="data-scientist")
    )
    assert created.status_code == 202 and created.json()["status"] == "Pending"
    assert [event.job_name for event in rig.requests()] == ["job-1"]
    [record] = list_audit_records(rig.store, action="training_job.create")
    assert (record.principal, record.outcome) == ("data-scientist", "success")
    assert record.resource == "/training-jobs"
    described = await rig.client.get("/training-jobs/job-1", headers=rig.headers("read"))
    assert described.json()["status"] == "Pending"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"output_uri": "gateway/keys"}, "output_uri"),
        ({"algorithm": "script", "entry_point": "platform/keys/x.json"}, "entry_point"),
        (
            {"input_channels": [{"name": "train", "uri": "platform/audit/"}]},
            "input_channels[0].uri",
        ),
    ],
)
async def test_a_private_location_is_a_400_naming_the_field_and_nothing_is_written(
    rig: Rig, overrides: dict[str, Any], field: str
) -> None:
    trainer = rig.headers("train")
    before = {info.key for info in rig.store.list("", recursive=True)}
    response = await rig.client.post("/training-jobs", json=body(**overrides), headers=trainer)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input" and field in response.json()["error"]
    written = {info.key for info in rig.store.list("", recursive=True)} - before
    assert all(key.startswith("platform/audit/") for key in written), written
    assert not rig.requests()
    [record] = list_audit_records(rig.store, action="training_job.create")
    assert record.outcome == "failed"


async def test_registering_as_approved_needs_the_approve_scope(rig: Rig) -> None:
    registration = {"model_package_group": "g", "approval_status": "Approved"}
    job = body(registration=registration)
    refused = await rig.client.post("/training-jobs", json=job, headers=rig.headers("train"))
    assert refused.status_code == 403 and "approve" in refused.json()["error"]
    assert not rig.requests()
    both = rig.headers("train", "approve")
    assert (await rig.client.post("/training-jobs", json=job, headers=both)).status_code == 202
