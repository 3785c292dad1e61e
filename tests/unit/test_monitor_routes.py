"""The monitor's API is locked: reads need `read`, schedule and policy changes need `deploy`, and
every change (from a route or from a request event) leaves an audit record naming its principal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.audit import AuditRecord, Outcome, list_audit_records
from cairn.auth import Principal
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import MonitoringScheduleRequested, TrainingJobRequested
from cairn.store.memory import InMemoryObjectStore
from fastapi.testclient import TestClient

from services.monitor.app import create_service
from services.monitor.config import MonitorSettings
from services.monitor.domain import RetrainPolicyBody
from services.monitor.handlers import Monitor
from services.monitor.retrain import Retrainer
from tests.support.auth import auth_settings, scoped_headers
from tests.unit.test_monitor_checks import Published, deploy_model, labelled_frame
from tests.unit.test_monitor_retrain import drift_envelope, label_capture


class RecordingAuthority:
    """The kernel's `principal_of` / `audit`, recorded (the signer is whoever the test says)."""

    def __init__(self, signer: str) -> None:
        self.signer = signer
        self.records: list[AuditRecord] = []

    async def principal_of(self, envelope: Envelope[Any]) -> Principal:
        return Principal(name=self.signer, key_id="k1", scopes=frozenset({"deploy"}))

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
        record = AuditRecord(
            principal=name,
            action=action,
            resource=resource,
            outcome=outcome,
            correlation_id=correlation_id,
            details=details or {},
        )
        self.records.append(record)
        return record


def test_reads_need_read_and_changes_need_deploy_with_an_audit_record(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    settings = auth_settings(home=tmp_path)
    client = TestClient(create_service(settings, store, MonitorSettings()).api)
    viewer = scoped_headers(store, settings, ["read"], name="viewer")
    operator = scoped_headers(store, settings, ["deploy"], name="operator")
    schedule = {"interval_s": 60, "min_rows": 10}

    assert client.get("/schedules").status_code == 401
    assert client.post("/schedules/ep", json=schedule, headers=viewer).status_code == 403
    created = client.post("/schedules/ep", json=schedule, headers=operator)
    assert created.status_code == 201, created.text
    listed = client.get("/schedules", headers=viewer)
    assert [s["endpoint_name"] for s in listed.json()] == ["ep"]
    policy = client.put("/retrain-policies/credit", json={"endpoint_name": "ep"}, headers=operator)
    assert policy.status_code == 200, policy.text
    assert client.get("/retrain-policies/credit", headers=viewer).status_code == 200

    trail = {(r.principal, r.action, r.resource, r.outcome) for r in list_audit_records(store)}
    assert trail == {
        ("viewer", "monitoring_schedule.create", "/schedules/ep", "denied"),
        ("operator", "monitoring_schedule.create", "/schedules/ep", "success"),
        ("operator", "retrain_policy.put", "/retrain-policies/credit", "success"),
    }


async def test_schedule_request_event_is_audited_under_its_signer() -> None:
    authority = RecordingAuthority("alice")
    monitor = Monitor(InMemoryObjectStore(), Published(), MonitorSettings(), authority)
    request = MonitoringScheduleRequested(endpoint_name="ep", interval_s=120)
    envelope = Envelope[Any](
        type="MonitoringScheduleRequested", source="cli", correlation_id="c-1", data=request
    )

    await monitor.on_schedule_requested(envelope)

    assert monitor.get_schedule("ep").interval_s == 120
    assert [(r.principal, r.action, r.resource, r.correlation_id) for r in authority.records] == [
        ("alice", "monitoring_schedule.create", "/schedules/ep", "c-1")
    ]


async def test_a_retrain_the_policy_starts_is_audited_as_the_monitors_own_change() -> None:
    store = InMemoryObjectStore()
    deploy_model(store, "ep", "credit", 1, "job-1", rounds=3)
    authority = RecordingAuthority("unused")
    published = Published()
    retrainer = Retrainer(Monitor(store, published, MonitorSettings(), authority))
    await retrainer.put_policy("credit", RetrainPolicyBody(endpoint_name="ep", cooldown_s=0))
    await label_capture(store, retrainer, labelled_frame(300, seed=9, shift=0.5))

    await retrainer.on_drift(drift_envelope())

    [request] = published.of(TrainingJobRequested)
    [record] = authority.records
    assert (record.principal, record.action, record.resource) == (
        "service:monitor",
        "retrain_policy.retrain",
        "/retrain-policies/credit",
    )
    assert record.details == {"drift_run_id": "run-1", "training_job": request.job_name}
    assert record.correlation_id == "drift-corr"
