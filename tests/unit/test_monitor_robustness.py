"""A bad path name or a non-finite number is a 4xx with a reason, never a 500 (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn.contracts.events import MonitoringScheduleRequested
from cairn.errors import InvalidInput
from cairn.store.memory import InMemoryObjectStore
from fastapi.testclient import TestClient

from services.monitor.app import create_service
from services.monitor.config import MonitorSettings
from services.monitor.handlers import Monitor
from tests.support.auth import admin_headers, auth_settings


def _client(tmp_path: Path) -> TestClient:
    store = InMemoryObjectStore()
    settings = auth_settings(home=tmp_path)
    service = create_service(settings, store, MonitorSettings())
    return TestClient(service.api, headers=admin_headers(store, settings))


def test_a_schedule_for_an_invalid_endpoint_name_is_a_400_naming_the_field(tmp_path: Path) -> None:
    client = _client(tmp_path)

    created = client.post("/schedules/bad_name", json={"interval_s": 60, "min_rows": 10})

    assert created.status_code == 400, created.text
    assert created.json()["code"] == "invalid_input"
    assert "endpoint_name" in created.json()["error"]
    assert client.get("/schedules").json() == []


def test_non_finite_numbers_in_schedules_and_policies_are_refused(tmp_path: Path) -> None:
    client = _client(tmp_path)
    json_headers = {"content-type": "application/json"}

    schedule = client.post(
        "/schedules/ep", content=b'{"interval_s": 1e309, "min_rows": 10}', headers=json_headers
    )
    policy = client.put(
        "/retrain-policies/credit",
        content=b'{"endpoint_name": "ep", "cooldown_s": Infinity, "margin": NaN}',
        headers=json_headers,
    )

    assert schedule.status_code == 422 and "interval_s" in schedule.json()["error"]
    assert "finite" in schedule.json()["error"]
    assert policy.status_code == 422 and "cooldown_s" in policy.json()["error"]
    assert client.get("/schedules").json() == []
    assert client.get("/retrain-policies/credit").status_code == 404


def test_an_interval_too_long_to_schedule_is_refused_over_http_and_over_the_bus(
    tmp_path: Path,
) -> None:
    client = _client(tmp_path)
    monitor: Monitor = client.app.state.monitor  # type: ignore[attr-defined]

    refused = client.post("/schedules/ep", json={"interval_s": 8.4e306, "min_rows": 10})
    with pytest.raises(InvalidInput, match="interval_s"):  # dead-lettered, never retried
        monitor.apply_schedule(MonitoringScheduleRequested(endpoint_name="ep", interval_s=8.4e306))

    assert refused.status_code == 422 and "interval_s" in refused.json()["error"]
    assert client.get("/schedules").json() == []
