"""Deployment plans: stages pick their devices, complete on threshold + bake, and a failed stage
rolls back exactly its own devices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cairn.errors import InvalidInput

from services.edge.domain import (
    Desired,
    Device,
    DriftCheck,
    FeatureDrift,
    Gate,
    Plan,
    parse_gate,
    parse_stage,
    validate_plan,
)
from services.edge.rollout import advance, drift_due

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


def test_a_stage_may_bake_for_its_own_time_and_gates_parse_with_their_defaults() -> None:
    assert parse_stage("wave=percent:25:bake=120").bake_s == 120
    assert parse_stage("canary=devices:d1,d2:bake=0").devices == ["d1", "d2"]
    assert parse_gate("drift") == Gate(kind="drift", threshold=0.05, min_samples=100)
    assert parse_gate("drift:0.01:500") == Gate(kind="drift", threshold=0.01, min_samples=500)
    assert parse_gate("latency") == Gate(kind="latency", threshold=100.0)
    for bad, reason in [
        ("drift:1.5", "between 0 and 1"),
        ("drift:0.05:many", "not a sample count"),
        ("latency:5:10", "only the drift gate"),
        ("accuracy", "unknown gate"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            parse_gate(bad)
    for bad, reason in [
        ("wave=percent:25:bake=-1", "negative"),
        ("wave=percent:150", "percent: Input should be less than or equal to 100"),
        ("a wave!=devices:d1", "name: String should match pattern"),
        ("wave=percent:nan", "not a finite number"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            parse_stage(bad)

    devices = fleet()
    step = advance(plan("quick=devices:d00:bake=0", "slow=devices:d01"), devices, T0)
    install(devices, ["d00", "d01"])
    step = advance(step, devices, T0 + timedelta(seconds=1))
    assert [s.status for s in step.stages] == ["Completed", "InProgress"]  # no bake for "quick"
    step = advance(step, devices, T0 + timedelta(seconds=5))
    assert step.stages[1].status == "InProgress"  # "slow" bakes the plan's 10 s
    assert advance(step, devices, T0 + timedelta(seconds=12)).status == "Completed"


def check(at: datetime, samples: int, *drifted: str) -> DriftCheck:
    features = [
        FeatureDrift(feature=name, test="ks", statistic=0.6 if name in drifted else 0.05,
                     p_value=1e-12 if name in drifted else 0.4, drifted=name in drifted)
        for name in ("age", "income")
    ]  # fmt: skip
    return DriftCheck(checked_at=at, samples=samples, devices=["d02"], threshold=0.025,
                      features=features if samples >= 100 else [])  # fmt: skip


def drift_plan(devices: dict[str, Device]) -> Plan:
    step = advance(
        plan("canary=devices:d00,d01", "wave=devices:d02,d03", "rest=percent:100",
             gates=[parse_gate("drift:0.05:100")], stage_deadline_s=300),
        devices, T0,
    )  # fmt: skip
    install(devices, ["d00", "d01"])
    step = advance(step, devices, T0 + timedelta(seconds=1))
    assert drift_due(step, T0 + timedelta(seconds=5), every_s=5) is None  # still baking
    due = drift_due(step, T0 + timedelta(seconds=11), every_s=5)
    assert due is not None and due.name == "canary"
    now = T0 + timedelta(seconds=11)
    step = advance(step, devices, now, {"canary": check(now, 250)})
    assert [s.status for s in step.stages[:2]] == ["Completed", "InProgress"]
    install(devices, ["d02", "d03"])
    return advance(step, devices, T0 + timedelta(seconds=12))


def test_the_drift_gate_waits_for_enough_rows_then_fails_at_the_deadline() -> None:
    devices = fleet()
    step = drift_plan(devices)
    baked = T0 + timedelta(seconds=23)
    step = advance(step, devices, baked)
    assert step.stages[1].status == "InProgress"  # baked, but nothing measured yet
    step = advance(step, devices, baked, {"wave": check(baked, 40)})
    assert step.stages[1].drift is not None and step.stages[1].drift.samples == 40
    assert drift_due(step, baked + timedelta(seconds=2), every_s=5) is None  # measured just now
    assert drift_due(step, baked + timedelta(seconds=5), every_s=5) is not None
    late = T0 + timedelta(seconds=12 + 301)
    step = advance(step, devices, late, {"wave": check(late, 90)})
    assert step.status == "RolledBack"
    assert "drift gate: 90 captured rows" in (step.stages[1].reason or "")
    assert {n for n, t in step.targets.items() if t.rollback} == {"d02", "d03"}


def test_drift_in_a_stage_rolls_back_exactly_its_devices_and_none_lets_it_complete() -> None:
    devices = fleet()
    drifting = drift_plan(devices)
    now = T0 + timedelta(seconds=23)
    step = advance(drifting, devices, now, {"wave": check(now, 180, "age")})
    assert step.status == "RolledBack"
    assert [s.status for s in step.stages] == ["Completed", "RolledBack", "Pending"]
    reason = step.stages[1].reason or ""
    assert "drift gate: 1 of 2 features drifted in 180 rows from d02: age (ks 0.6" in reason
    rolled = {name for name, target in step.targets.items() if target.rollback}
    assert rolled == {"d02", "d03"}
    assert step.targets["d00"] == Desired(package_name="new", plan_name="p")

    clean = advance(drifting, devices, now, {"wave": check(now, 180)})
    assert [s.status for s in clean.stages] == ["Completed", "Completed", "InProgress"]
