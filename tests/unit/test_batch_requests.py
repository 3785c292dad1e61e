"""A transform job against an endpoint is no way around an endpoint-bound key: over HTTP and on
the bus the requester needs `invoke` on the endpoint (403, audited), and an unknown endpoint is a
404 before anything runs. The endpoint is read through the deployer's declared state contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.audit import AuditRecord, Outcome, list_audit_records
from cairn.auth.principal import Principal
from cairn.contracts.batch_events import (
    TransformJobFailed,
    TransformJobRequested,
    TransformJobStarted,
    TransformShardRequested,
)
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import VariantState
from cairn.contracts.state import EndpointStateView, write_state
from cairn.service import Service
from cairn.store import InMemoryObjectStore
from cairn_cli import app
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from services.batch.app import create_service
from services.batch.config import BatchSettings
from services.batch.domain import JOBS_PREFIX
from services.batch.handlers import BatchHandlers
from tests.support.auth import auth_settings, scoped_headers
from tests.support.http_server import served_in_thread
from tests.unit.test_batch_transform import csv_text


def deploy_endpoint(store: InMemoryObjectStore, name: str, status: str = "InService") -> None:
    variant = VariantState(
        variant_name="blue",
        model_package_group="g",
        model_version=1,
        artifact_uri="memory://models/g/1/",
        weight=1.0,
        instance_count=1,
    )
    view = EndpointStateView(
        endpoint_name=name, revision=1, status=status, production_variants=[variant]
    )  # type: ignore[arg-type]
    write_state(store, view, name)


def body(endpoint: str, name: str = "scored") -> dict[str, Any]:
    return {
        "job_name": name,
        "endpoint_name": endpoint,
        "transform_input": {"data_source": "data/in/", "content_type": "text/csv"},
        "transform_output": {"output_path": f"outputs/{name}/"},
    }


@pytest.fixture
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore()
    store.put_bytes("data/in/a.csv", csv_text(10))
    deploy_endpoint(store, "credit")
    deploy_endpoint(store, "other")
    deploy_endpoint(store, "gone", status="Deleted")
    return store


@pytest.fixture
async def service(store: InMemoryObjectStore, tmp_path: Path) -> AsyncIterator[Service]:
    yield create_service(auth_settings(home=tmp_path), store, BatchSettings(worker_id="unit"))


async def post(service: Service, scopes: list[Any], job: dict[str, Any], **kw: Any) -> Any:
    headers = scoped_headers(service.store, service.settings, scopes, name="analyst", **kw)
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://batch") as client:
        return await client.post("/transform-jobs", json=job, headers=headers)


async def test_a_key_that_may_not_invoke_the_endpoint_is_refused_and_audited(
    service: Service, store: InMemoryObjectStore
) -> None:
    bound = await post(service, ["deploy", "invoke"], body("credit"), endpoints=["other"])
    assert bound.status_code == 403 and "may not invoke endpoint 'credit'" in bound.json()["error"]
    without = await post(service, ["deploy"], body("credit"))
    assert without.status_code == 403 and without.json()["details"]["required_scope"] == "invoke"
    records = list_audit_records(store, action="transform_job.create")
    assert [(r.principal, r.outcome, r.status_code) for r in records] == [
        ("analyst", "denied", 403),
        ("analyst", "denied", 403),
    ]
    assert not store.exists(f"{JOBS_PREFIX}/scored.json")  # nothing ran


async def test_an_unknown_or_deleted_endpoint_is_a_404_before_anything_runs(
    service: Service, store: InMemoryObjectStore
) -> None:
    for endpoint in ("nowhere", "gone"):
        answer = await post(service, ["deploy", "invoke"], body(endpoint), endpoints=[endpoint])
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == "endpoint_not_found"
    bad = await post(service, ["deploy", "invoke"], body("../keys"))
    assert bad.status_code in (400, 422) and "endpoint_name" in bad.text
    assert not any(info.key.startswith(JOBS_PREFIX) for info in store.list())


# On the bus ----------------------------------------------------------------------------------


class RecordingPlatform:
    """The kernel's Platform for the handlers: the signer is the test's; effects are kept."""

    def __init__(self, signer: Principal) -> None:
        self.signer = signer
        self.events: list[BaseModel] = []
        self.dead: list[str] = []
        self.audits: list[AuditRecord] = []

    async def publish(
        self, data: BaseModel, cause: Envelope[Any] | None = None, correlation_id: str | None = None
    ) -> Envelope[Any]:
        self.events.append(data)
        return envelope(data)

    async def dead_letter(
        self, envelope: Envelope[Any], reason: str, *, error: str = "", group: str = ""
    ) -> None:
        self.dead.append(reason)

    async def principal_of(self, envelope: Envelope[Any]) -> Principal:
        return self.signer

    async def audit(
        self,
        *,
        action: str,
        resource: str,
        principal: Principal | str,
        outcome: Outcome = "success",
        correlation_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        name = principal.name if isinstance(principal, Principal) else principal
        record = AuditRecord(principal=name, action=action, resource=resource, outcome=outcome)
        self.audits.append(record)
        return record


def envelope(data: BaseModel) -> Envelope[Any]:
    return Envelope[type(data)](  # type: ignore[misc]
        type=type(data).__name__, source="cli", correlation_id="c", data=data
    )


def signer(*endpoints: str) -> Principal:
    return Principal(
        name="analyst",
        key_id="CKIAANALYST000000000",
        scopes=frozenset({"deploy", "invoke"}),
        endpoints=frozenset(endpoints),
    )


async def test_a_request_on_the_bus_needs_its_signers_invoke_on_the_endpoint(
    store: InMemoryObjectStore,
) -> None:
    refused = RecordingPlatform(signer("other"))
    request = TransformJobRequested.model_validate(body("credit", "bus-job"))
    await BatchHandlers(store, BatchSettings(), refused).on_requested(envelope(request))
    failed = [e for e in refused.events if isinstance(e, TransformJobFailed)]
    assert [(e.failure_code, e.job_name) for e in failed] == [("forbidden", "bus-job")]
    assert len(refused.dead) == 1 and "may not invoke endpoint 'credit'" in refused.dead[0]
    assert [(a.principal, a.outcome) for a in refused.audits] == [("analyst", "denied")]
    assert not any(isinstance(e, TransformShardRequested) for e in refused.events)

    allowed = RecordingPlatform(signer("credit"))
    request = TransformJobRequested.model_validate(body("credit", "bus-job-2"))
    await BatchHandlers(store, BatchSettings(), allowed).on_requested(envelope(request))
    started = [e for e in allowed.events if isinstance(e, TransformJobStarted)]
    assert len(started) == 1 and started[0].shards_pending == 1
    assert [type(e).__name__ for e in allowed.events].count("TransformShardRequested") == 1
    assert [(a.principal, a.outcome) for a in allowed.audits] == [("analyst", "success")]


# The CLI and the SDK pass the endpoint through -------------------------------------------------


def test_cairn_transform_create_with_endpoint_sends_an_endpoint_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[dict[str, Any]] = []

    async def create(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({"job_name": received[-1]["job_name"], "resumed": False}, 202)

    stand_in = Starlette(routes=[Route("/transform-jobs", create, methods=["POST"])])
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CAIRN_API_KEY", raising=False)
    with served_in_thread(stand_in, "a stand-in batch service") as url:
        monkeypatch.setenv("CAIRN_BATCH_URL", url)
        args = ["transform", "create", "live", "--input", "data/in/", "--output", "outputs/live"]
        done = CliRunner().invoke(app, [*args, "--endpoint", "credit", "--batch-strategy",
                                        "SingleRecord"])  # fmt: skip
        assert done.exit_code == 0, done.output
        both = CliRunner().invoke(app, [*args, "--endpoint", "credit", "--model", "g:1"])
        neither = CliRunner().invoke(app, args)
    assert both.exit_code == neither.exit_code == 2
    assert len(received) == 1
    request = TransformJobRequested.model_validate(received[0])
    assert (request.endpoint_name, request.model_package_group) == ("credit", None)
    assert request.batch_strategy == "SingleRecord"
