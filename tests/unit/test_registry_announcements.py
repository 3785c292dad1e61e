"""An approval written but never announced (the registry killed between the write and the publish)
is announced once: by the same approval again over HTTP, or by the registry's sweep (at start, then
for changes older than its grace period). The kill is a publish that fails after the write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import ModelApprovalChanged
from cairn.errors import Unavailable
from cairn.store.memory import InMemoryObjectStore
from pydantic import BaseModel

from services.registry.app import create_service
from services.registry.domain import ApprovalDecision
from services.registry.handlers import Registry
from tests.support.auth import admin_headers, auth_settings
from tests.unit.test_registry_handlers import Recorder, completed, write_manifest

APPROVAL = "/model-package-groups/credit/versions/1/approval"


class Killable(Recorder):
    """Publishes like `Recorder` unless `killed`: then it fails, as a killed registry would."""

    killed = False

    async def __call__(self, data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        if self.killed:
            raise Unavailable("killed before the publish")
        return await super().__call__(data, cause)

    def approvals(self) -> list[tuple[str, str | None, str]]:
        return [
            (e.approval_status, e.previous_status, e.changed_by)
            for e in self.events
            if isinstance(e, ModelApprovalChanged)
        ]


@pytest.fixture
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore("registry-announcements")
    write_manifest(store, "models/job-1/")
    return store


@pytest.fixture
async def api(
    store: InMemoryObjectStore, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Killable]]:
    settings = auth_settings(home=tmp_path)
    service = create_service(settings=settings, store=store)
    publish = service.api.state.registry.publish = Killable()
    await service.api.state.registry.on_training_job_completed(completed("job-1"))
    transport = httpx.ASGITransport(app=service.api)
    headers = admin_headers(store, settings, name="root")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://registry", headers=headers
    ) as client:
        yield client, publish


async def test_the_same_approval_again_announces_a_change_that_never_went_out(
    api: tuple[httpx.AsyncClient, Killable],
) -> None:
    client, publish = api
    publish.killed = True
    lost = await client.post(APPROVAL, json={"status": "Approved", "reason": "ok"})
    assert lost.status_code == 503, lost.text
    stored = (await client.get("/model-package-groups/credit/versions/1")).json()
    assert stored["approval_status"] == "Approved" and not stored["approval_announced"]

    publish.killed = False
    retried = await client.post(APPROVAL, json={"status": "Approved", "reason": "ok"})
    again = await client.post(APPROVAL, json={"status": "Approved", "reason": "ok"})

    assert retried.status_code == again.status_code == 200
    assert again.json()["approval_announced"]
    assert publish.approvals() == [("Approved", "PendingManualApproval", "root")]


async def test_the_sweep_announces_an_unannounced_change_once_after_its_grace_period(
    store: InMemoryObjectStore,
) -> None:
    killed = Killable()
    registry = Registry(store, killed)
    await registry.on_training_job_completed(completed("job-1"))
    killed.killed = True
    with pytest.raises(Unavailable):
        await registry.decide("credit", "1", ApprovalDecision(status="Rejected", by="bob"))
    decided_at = registry.get_version("credit", "1").approval_history[-1].changed_at

    later: list[datetime] = [decided_at + timedelta(seconds=5)]
    published = Killable()
    restarted = Registry(store, published, clock=lambda: later[0])
    await restarted.announce_pending(older_than_s=10)
    assert published.approvals() == []  # maybe still being published by its writer

    later[0] = decided_at + timedelta(seconds=11)
    await restarted.announce_pending(older_than_s=10)
    await restarted.announce_pending(older_than_s=0)  # a restart's first pass

    assert published.approvals() == [("Rejected", "PendingManualApproval", "bob")]
    assert restarted.get_version("credit", "1").approval_announced


async def test_an_announcement_does_not_mark_a_newer_decision_announced(
    store: InMemoryObjectStore,
) -> None:
    published = Killable()
    registry = Registry(store, published, clock=utc_now)
    await registry.on_training_job_completed(completed("job-1"))
    approved = await registry.decide("credit", "1", ApprovalDecision(status="Approved", by="a"))
    published.killed = True
    with pytest.raises(Unavailable):
        await registry.decide("credit", "1", ApprovalDecision(status="Rejected", by="b"))
    published.killed = False

    await registry._publish_approval(  # the first decision's mark, arriving late
        approved,
        ModelApprovalChanged(
            model_package_group="credit",
            version=1,
            approval_status="Approved",
            previous_status="PendingManualApproval",
            changed_by="a",
        ),
        None,
    )

    assert not registry.get_version("credit", "1").approval_announced
    await registry.announce_pending(older_than_s=0)
    assert published.approvals()[-1] == ("Rejected", "Approved", "b")
