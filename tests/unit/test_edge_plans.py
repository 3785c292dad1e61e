"""Deployment plans: stages pick their devices, complete on threshold + bake, and a failed stage
rolls back exactly its own devices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cairn.errors import InvalidInput

from services.edge.domain import (
    Desired,
    Device,
    Gate,
    Plan,
    advance,
    parse_stage,
    validate_plan,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
FLEET = [f"d{i:02d}" for i in range(10)]


def plan(*stages: str, **fields: object) -> Plan:
    base: dict[str, object] = {
        "plan_name": "p",
        "fleet_name": "f",
        "package_name": "new",
        "stages": [parse_stage(s) for s in stages],
        "bake_s": 10.0,
    }
    return Plan(**(base | fields))  # type: ignore[arg-type]


def fleet(running: str = "old") -> dict[str, Device]:
    return {
        name: Device(fleet_name="f", device_name=name, key_id="k", package_name=running,
                     health="Healthy")
        for name in FLEET
    }  # fmt: skip


def install(
    devices: dict[str, Device], names: list[str], package: str = "new", **kw: object
) -> None:
    for name in names:
        devices[name] = devices[name].model_copy(update={"package_name": package, **kw})


def test_stage_parsing_and_decreasing_percentages_are_refused() -> None:
    assert parse_stage("canary=devices:d1,d2").devices == ["d1", "d2"]
    assert parse_stage("wave=percent:25%").percent == 25
    with pytest.raises(InvalidInput, match="not NAME"):
        parse_stage("canary:d1")
    with pytest.raises(InvalidInput, match="must not decrease"):
        validate_plan(plan("a=percent:50", "b=percent:25"), FLEET)
    with pytest.raises(InvalidInput, match="no device 'zz'"):
        validate_plan(plan("a=devices:zz"), FLEET)


def test_stages_take_named_devices_then_cumulative_percentages() -> None:
    devices = fleet()
    step = advance(plan("canary=devices:d03,d07", "half=percent:50", "rest=percent:100"),
                   devices, T0)  # fmt: skip
    canary = step.stages[0]
    assert (canary.status, canary.assigned) == ("InProgress", ["d03", "d07"])
    assert step.targets == {
        "d03": Desired(package_name="new", plan_name="p"),
        "d07": Desired(package_name="new", plan_name="p"),
    }
    install(devices, ["d03", "d07"])
    step = advance(step, devices, T0 + timedelta(seconds=1))
    assert step.stages[0].status == "InProgress"  # threshold met; baking
    step = advance(step, devices, T0 + timedelta(seconds=12))
    assert step.stages[0].status == "Completed"
    # 50% of 10 devices cumulatively: three more beside the canaries.
    assert step.stages[1].assigned == ["d00", "d01", "d02"]
    install(devices, ["d00", "d01", "d02"])
    step = advance(step, devices, T0 + timedelta(seconds=13))
    step = advance(step, devices, T0 + timedelta(seconds=30))
    assert step.stages[2].assigned == ["d04", "d05", "d06", "d08", "d09"]
    install(devices, FLEET)
    step = advance(step, devices, T0 + timedelta(seconds=31))
    step = advance(step, devices, T0 + timedelta(seconds=50))
    assert step.status == "Completed"
    types = [item["type"] for item in step.outbox]
    assert types.count("EdgeDeploymentStageCompleted") == 3
    assert types[-1] == "EdgeDeploymentCompleted"


def test_a_failing_gate_rolls_back_exactly_its_stages_devices() -> None:
    devices = fleet()
    step = advance(
        plan("canary=devices:d00,d01", "wave=devices:d02,d03,d04", "rest=percent:100",
             gates=[Gate(kind="error-rate", threshold=0.2)]),
        devices, T0,
    )  # fmt: skip
    install(devices, ["d00", "d01"])
    step = advance(advance(step, devices, T0), devices, T0 + timedelta(seconds=11))
    assert step.stages[1].status == "InProgress"
    install(devices, ["d02", "d03", "d04"])
    install(devices, ["d03"], request_count=10, error_count=9)
    step = advance(step, devices, T0 + timedelta(seconds=12))
    assert step.status == "RolledBack"
    assert [s.status for s in step.stages] == ["Completed", "RolledBack", "Pending"]
    assert "d03 failed 90%" in (step.stages[1].reason or "")
    rolled = {name for name, target in step.targets.items() if target.rollback}
    assert rolled == {"d02", "d03", "d04"}
    assert all(step.targets[n].package_name == "old" for n in rolled)
    assert step.targets["d00"] == Desired(package_name="new", plan_name="p")
    assert "rest" not in {d for s in step.stages for d in s.assigned}


def test_refusals_beyond_max_failures_fail_the_stage_and_pause_when_asked() -> None:
    devices = fleet()
    step = advance(plan("all=percent:100", max_failures=1, on_failure="PAUSE"), devices, T0)
    refusal = {"package_name": "new", "revision": 0, "reason": "checksum", "code": "x"}
    for name in ("d01", "d02"):
        devices[name] = devices[name].model_copy(update={"refusal": refusal})
    step = advance(step, devices, T0 + timedelta(seconds=1))
    assert step.status == "Paused"
    assert "2 of 10 devices failed" in (step.reason or "")
    assert not any(t.rollback for t in step.targets.values())


def test_an_offline_device_within_the_threshold_does_not_hold_the_stage() -> None:
    devices = fleet()
    step = advance(plan("all=percent:100", success_threshold_pct=90), devices, T0)
    install(devices, FLEET[:9])  # d09 is offline: still on "old"
    step = advance(step, devices, T0 + timedelta(seconds=1))
    step = advance(step, devices, T0 + timedelta(seconds=12))
    assert step.status == "Completed"
    assert step.targets["d09"].package_name == "new"  # it catches up when it returns


def test_a_stage_missing_its_deadline_fails() -> None:
    devices = fleet()
    step = advance(plan("all=percent:100", stage_deadline_s=60), devices, T0)
    step = advance(step, devices, T0 + timedelta(seconds=61))
    assert step.status == "RolledBack"
    assert "deadline: 0 of 10" in (step.reason or "")
