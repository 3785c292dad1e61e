"""Deployer rules: endpoint lifecycle, weights, rollout state machine (fake clock), rollback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cairn.contracts.events import (
    DeploymentRequested,
    EndpointMetricsReported,
    ModelApprovalChanged,
    ModelPackageRegistered,
    RolloutPolicy,
    VariantSpec,
    VariantTraffic,
)
from cairn.errors import InvalidInput

from services.deployer import domain, rollout
from services.deployer.documents import AutoDeployPolicy, EndpointDoc, ModelRecord, WeightChange
from services.deployer.domain import (
    EndpointAlreadyExists,
    EndpointBusy,
    EndpointNotFound,
    ModelVersionNotApproved,
    ModelVersionRejected,
    ModelVersionUnknown,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


MODELS = {
    ("credit", n): ModelRecord(
        model_package_group="credit",
        version=n,
        artifact_uri=f"models/job-{n}/",
        approval_status="Approved",
        updated_at=T0,
    )
    for n in (1, 2, 3)
}


def spec(version: int, name: str = "AllTraffic", weight: float = 1.0) -> VariantSpec:
    return VariantSpec(
        variant_name=name,
        model_package_group="credit",
        model_version=version,
        initial_weight=weight,
    )


def request(
    action: str, *variants: VariantSpec, rollout: RolloutPolicy | None = None
) -> DeploymentRequested:
    return DeploymentRequested(
        endpoint_name="live",
        action=action,  # type: ignore[arg-type]
        production_variants=list(variants),
        rollout=rollout or RolloutPolicy(),
    )


def created() -> EndpointDoc:
    return domain.create_endpoint(None, request("create", spec(1)), MODELS, at(0))


def weights(doc: EndpointDoc) -> dict[str, tuple[int, float]]:
    return {v.variant_name: (v.model_version, v.weight) for v in doc.production_variants}


def test_create_serves_the_resolved_artifact_and_is_idempotent() -> None:
    doc = created()
    assert (doc.revision, doc.status) == (1, "InService")
    assert doc.production_variants[0].artifact_uri == "models/job-1/"
    assert domain.create_endpoint(doc, request("create", spec(1)), MODELS, at(5)) is doc
    with pytest.raises(EndpointAlreadyExists):
        domain.create_endpoint(doc, request("create", spec(2)), MODELS, at(5))


def test_unknown_or_rejected_versions_cannot_be_deployed() -> None:
    with pytest.raises(ModelVersionUnknown, match="version 9"):
        domain.create_endpoint(None, request("create", spec(9)), MODELS, at(0))
    rejected = {
        **MODELS,
        ("credit", 2): MODELS[("credit", 2)].model_copy(update={"approval_status": "Rejected"}),
    }
    with pytest.raises(ModelVersionRejected, match="Rejected"):
        domain.create_endpoint(None, request("create", spec(2)), rejected, at(0))


def test_only_approved_versions_deploy_unless_the_endpoint_allows_unapproved_ones() -> None:
    pending = {
        **MODELS,
        ("credit", 2): MODELS[("credit", 2)].model_copy(
            update={"approval_status": "PendingManualApproval"}
        ),
    }
    with pytest.raises(ModelVersionNotApproved, match="PendingManualApproval, not Approved"):
        domain.create_endpoint(None, request("create", spec(2)), pending, at(0))
    with pytest.raises(ModelVersionNotApproved):
        domain.update_endpoint(created(), request("update", spec(2)), pending, at(1))

    allowed = domain.create_endpoint(
        None, request("create", spec(2)), pending, at(0), allow_unapproved=True
    )
    assert allowed.production_variants[0].model_version == 2
    assert allowed.config is not None and allowed.config.allow_unapproved
    rejected = {
        **MODELS,
        ("credit", 2): MODELS[("credit", 2)].model_copy(update={"approval_status": "Rejected"}),
    }
    with pytest.raises(ModelVersionRejected):  # allowing unapproved never allows Rejected
        domain.create_endpoint(
            None, request("create", spec(2)), rejected, at(0), allow_unapproved=True
        )


def test_config_is_validated() -> None:
    with pytest.raises(InvalidInput, match="at least one"):
        domain.create_endpoint(None, request("create"), MODELS, at(0))
    with pytest.raises(InvalidInput, match="unique"):
        domain.create_endpoint(None, request("create", spec(1, "a"), spec(2, "a")), MODELS, at(0))
    with pytest.raises(InvalidInput, match="more than 0"):
        domain.create_endpoint(None, request("create", spec(1, weight=0)), MODELS, at(0))


def test_all_at_once_update_switches_in_one_revision() -> None:
    doc = domain.update_endpoint(created(), request("update", spec(2)), MODELS, at(1))
    assert (doc.revision, doc.status, doc.rollout) == (2, "InService", None)
    assert weights(doc) == {"AllTraffic": (2, 1.0)}


def test_canary_sends_its_share_then_everything_after_the_bake_time() -> None:
    policy = RolloutPolicy(mode="canary", canary_percent=10, bake_time_s=60)
    doc = domain.update_endpoint(
        created(), request("update", spec(2), rollout=policy), MODELS, at(0)
    )
    assert (doc.revision, doc.status) == (2, "Updating")
    assert weights(doc) == {"AllTraffic": (2, 0.1), "AllTraffic-previous": (1, 0.9)}

    assert rollout.advance_rollout(doc, at(59.9)) is doc  # still baking
    done = rollout.advance_rollout(doc, at(60))
    assert (done.revision, done.status, done.rollout) == (3, "InService", None)
    assert weights(done) == {"AllTraffic": (2, 1.0)}


def test_linear_rollout_steps_until_all_traffic_moved() -> None:
    policy = RolloutPolicy(mode="linear", linear_step_percent=40, bake_time_s=10)
    doc = domain.update_endpoint(
        created(), request("update", spec(2), rollout=policy), MODELS, at(0)
    )
    shares = [weights(doc)["AllTraffic"][1]]
    clock = 0.0
    while doc.rollout is not None:
        clock += 10
        doc = rollout.advance_rollout(doc, at(clock))
        shares.append(weights(doc)["AllTraffic"][1])
    assert shares == [0.4, 0.8, 1.0]
    assert doc.revision == 4 and clock == 20


def test_an_endpoint_is_busy_while_rolling_out() -> None:
    policy = RolloutPolicy(mode="canary", bake_time_s=60)
    doc = domain.update_endpoint(
        created(), request("update", spec(2), rollout=policy), MODELS, at(0)
    )
    with pytest.raises(EndpointBusy):
        domain.update_endpoint(doc, request("update", spec(3)), MODELS, at(1))
    with pytest.raises(EndpointBusy):
        domain.update_weights(
            doc, "live", [WeightChange(variant_name="AllTraffic", weight=1)], at(1)
        )


def report(
    requests: int, errors: int, p99: float = 5.0, name: str = "AllTraffic"
) -> EndpointMetricsReported:
    return EndpointMetricsReported(
        endpoint_name="live",
        window_s=5,
        variants=[
            VariantTraffic(
                variant_name=name,
                requests=requests,
                errors=errors,
                p50_latency_ms=1,
                p99_latency_ms=p99,
            ),
            VariantTraffic(
                variant_name="AllTraffic-previous",
                requests=900,
                errors=900,
                p50_latency_ms=1,
                p99_latency_ms=1,
            ),
        ],
    )


def canary(**policy: float) -> EndpointDoc:
    rollout = RolloutPolicy(mode="canary", bake_time_s=60, max_error_rate=0.05, **policy)  # type: ignore[arg-type]
    return domain.update_endpoint(
        created(), request("update", spec(2), rollout=rollout), MODELS, at(0)
    )


def test_error_alarm_waits_for_enough_requests_on_the_new_variant_then_trips() -> None:
    doc = canary()
    doc, reason, _ = rollout.observe_metrics(doc, report(5, 5), at(5), min_requests=20)
    assert (
        reason is None
    )  # 5 failures of 5 is not yet evidence; the old variant's errors don't count
    doc, reason, variant = rollout.observe_metrics(doc, report(20, 0), at(10), min_requests=20)
    assert reason is not None and "error rate 20.0%" in reason and variant == "AllTraffic"


def test_healthy_canary_does_not_trip_and_old_reports_are_ignored() -> None:
    doc = canary()
    doc, reason, _ = rollout.observe_metrics(doc, report(100, 1), at(5), min_requests=20)
    assert reason is None
    _, stale_reason, _ = rollout.observe_metrics(doc, report(100, 100), at(-1), min_requests=20)
    assert stale_reason is None


def test_latency_alarm_trips_on_p99() -> None:
    doc = canary(max_p99_latency_ms=50)
    _, reason, variant = rollout.observe_metrics(doc, report(30, 0, p99=80), at(5), min_requests=20)
    assert reason is not None and "p99 latency 80.0 ms" in reason and variant == "AllTraffic"


def test_rollback_restores_the_previous_revision_as_a_new_one() -> None:
    doc = canary()
    back = rollout.roll_back(doc, "AllTraffic", "too many errors", at(9))
    assert (back.revision, back.status, back.rollout) == (3, "InService", None)
    assert weights(back) == {"AllTraffic": (1, 1.0)}
    assert back.last_rollback is not None and back.last_rollback.restored_revision == 1
    assert back.config == created().config


def test_weights_change_without_touching_models() -> None:
    doc = domain.create_endpoint(None, request("create", spec(1, "a"), spec(2, "b")), MODELS, at(0))
    changed = domain.update_weights(
        doc, "live", [WeightChange(variant_name="b", weight=3, instance_count=2)], at(1)
    )
    assert changed.revision == 2
    assert [
        (v.variant_name, v.weight, v.instance_count, v.artifact_uri)
        for v in changed.production_variants
    ] == [
        ("a", 1.0, 1, "models/job-1/"),
        ("b", 3.0, 2, "models/job-2/"),
    ]
    assert changed.config is not None and changed.config.production_variants[1].initial_weight == 3
    with pytest.raises(InvalidInput, match="no production variant named zzz"):
        domain.update_weights(doc, "live", [WeightChange(variant_name="zzz", weight=1)], at(1))
    with pytest.raises(InvalidInput, match="more than 0"):
        domain.update_weights(
            doc,
            "live",
            [WeightChange(variant_name="a", weight=0), WeightChange(variant_name="b", weight=0)],
            at(1),
        )


def test_delete_leaves_a_tombstone_and_recreate_continues_revisions() -> None:
    deleted = domain.apply_request(created(), request("delete"), MODELS, at(1))
    assert (deleted.revision, deleted.status, deleted.production_variants) == (2, "Deleted", [])
    assert domain.apply_request(deleted, request("delete"), MODELS, at(2)) is deleted
    with pytest.raises(EndpointNotFound):
        domain.update_endpoint(deleted, request("update", spec(1)), MODELS, at(2))
    again = domain.apply_request(deleted, request("create", spec(1)), MODELS, at(3))
    assert (again.revision, again.status) == (3, "InService")


def test_projection_keeps_a_decision_that_arrived_before_the_registration() -> None:
    decided = domain.apply_approval_changed(
        None,
        ModelApprovalChanged(
            model_package_group="g", version=1, approval_status="Rejected", changed_by="x"
        ),
        T0,
    )
    registered = domain.apply_registered(
        decided,
        ModelPackageRegistered(
            model_package_group="g",
            version=1,
            artifact_uri="models/j/",
            approval_status="PendingManualApproval",
        ),
        T0,
    )
    assert (registered.artifact_uri, registered.approval_status) == ("models/j/", "Rejected")


def test_auto_deploy_creates_then_updates_and_skips_what_is_already_served() -> None:
    policy = AutoDeployPolicy(model_package_group="credit", endpoint_name="live")
    first = domain.auto_deploy_request(policy, 1, None)
    assert first is not None and first.action == "create"
    doc = domain.apply_request(None, first, MODELS, at(0))
    assert domain.auto_deploy_request(policy, 1, doc) is None
    second = domain.auto_deploy_request(policy, 2, doc)
    assert second is not None and second.action == "update"
    assert second.production_variants[0].model_version == 2
