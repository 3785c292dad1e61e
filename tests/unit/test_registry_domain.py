"""Registry rules: numbering, approval transitions, aliases, endpoint links, manifest reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cairn.artifacts import DatasetLineage, Lineage, ModelManifest, Signature
from cairn.errors import InvalidInput

from services.registry import domain
from services.registry.domain import AliasNotFound, ModelVersionNotFound

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def version(status: str = "PendingManualApproval", number: int = 1) -> domain.ModelVersion:
    registration = domain.RegisterVersion(
        artifact_uri=f"models/job-{number}/",
        approval_status=status,  # type: ignore[arg-type]
        registered_by="training-job:job-1",
    )
    return domain.new_version(registration, group_name="credit", version=number, now=T0)


def test_versions_are_numbered_from_one_without_gaps() -> None:
    group = None
    numbers = []
    for _ in range(3):
        group, number = domain.allocate_version(group, "credit", now=T0)
        numbers.append(number)
    assert numbers == [1, 2, 3]
    assert group is not None and group.latest_version == 3


def test_a_retried_job_gets_its_number_back() -> None:
    group, first = domain.allocate_version(None, "credit", now=T0, training_job="job-a")
    group, other = domain.allocate_version(group, "credit", now=T0, training_job="job-b")
    again, retried = domain.allocate_version(group, "credit", now=T0, training_job="job-a")
    assert (first, other, retried) == (1, 2, 1)
    assert again.latest_version == 2


def test_approval_keeps_who_when_why_and_history() -> None:
    pending = version()
    approved = domain.change_approval(
        pending, "Approved", by="alice", reason="AUC 0.91", now=T0 + timedelta(hours=1)
    )
    rejected = domain.change_approval(
        approved, "Rejected", by="bob", reason="bias found", now=T0 + timedelta(hours=2)
    )
    assert (approved.approved_by, rejected.approved_by) == ("alice", None)
    assert rejected.approval_status == "Rejected"
    history = [
        (r.status, r.previous_status, r.changed_by, r.reason) for r in rejected.approval_history
    ]
    assert history == [
        ("PendingManualApproval", None, "training-job:job-1", "registered"),
        ("Approved", "PendingManualApproval", "alice", "AUC 0.91"),
        ("Rejected", "Approved", "bob", "bias found"),
    ]


def test_repeating_a_decision_changes_nothing_and_needs_a_decider() -> None:
    approved = domain.change_approval(version(), "Approved", by="alice", reason="", now=T0)
    assert domain.change_approval(approved, "Approved", by="carol", reason="", now=T0) is approved
    with pytest.raises(InvalidInput):
        domain.change_approval(approved, "Rejected", by=" ", reason="", now=T0)


def test_alias_moves_and_resolves_and_must_point_at_an_existing_version() -> None:
    group, _ = domain.allocate_version(None, "credit", now=T0)
    group, _ = domain.allocate_version(group, "credit", now=T0)
    group = domain.set_alias(group, "champion", 1, T0)
    group = domain.set_alias(group, "champion", 2, T0)
    assert domain.resolve_version(group, "champion") == 2
    assert domain.resolve_version(group, "1") == 1
    with pytest.raises(ModelVersionNotFound):
        domain.set_alias(group, "champion", 3, T0)
    with pytest.raises(InvalidInput):
        domain.set_alias(group, "42", 1, T0)  # would shadow version 42 in URLs
    group = domain.remove_alias(group, "champion", T0)
    with pytest.raises(AliasNotFound):
        domain.resolve_version(group, "champion")
    with pytest.raises(AliasNotFound):
        domain.remove_alias(group, "champion", T0)


def test_endpoint_links_follow_revisions_and_ignore_stale_ones() -> None:
    linked = domain.link_endpoint(version(), "credit-live", ["AllTraffic"], 3, T0)
    stale = domain.link_endpoint(linked, "credit-live", ["Old"], 2, T0)
    assert stale.endpoints["credit-live"].variant_names == ["AllTraffic"]
    assert domain.unlink_endpoint(linked, "credit-live", 2) is linked  # older than the link
    assert domain.unlink_endpoint(linked, "credit-live", 4).endpoints == {}


def test_endpoint_models_groups_variants_serving_the_same_version() -> None:
    served = domain.endpoint_models(
        [("a", "credit", 1), ("b", "credit", 2)], ("shadow", "credit", 2)
    )
    assert served == {("credit", 1): ["a"], ("credit", 2): ["b", "shadow"]}


def test_manifest_gives_lineage_and_metrics_that_event_metrics_override() -> None:
    manifest = domain.summarize_manifest(
        ModelManifest(
            framework="xgboost",
            framework_version="2.1.0",
            algorithm="xgboost",
            task="binary_classification",
            signature=Signature(),
            metrics={"auc": 0.9, "logloss": 0.3},
            lineage=Lineage(
                training_job="job-1",
                algorithm="xgboost",
                hyperparameters={"max_depth": 4},
                datasets=[DatasetLineage(channel="train", uri="dataset://credit@1", sha256="ab")],
            ),
        )
    )
    registration = domain.RegisterVersion(
        artifact_uri="models/job-1/",
        approval_status="Approved",
        registered_by="x",
        metrics={"auc": 0.95},
    )
    created = domain.new_version(
        registration, group_name="credit", version=1, now=T0, manifest=manifest
    )
    assert created.metrics == {"auc": 0.95, "logloss": 0.3}
    assert created.framework == "xgboost" and created.task == "binary_classification"
    view = domain.lineage_view(created)
    assert view["datasets"] == [{"channel": "train", "uri": "dataset://credit@1", "sha256": "ab"}]
    assert view["training_job"]["job_name"] == "job-1"
    assert view["training_job"]["hyperparameters"] == {"max_depth": 4}


def test_group_names_are_checked() -> None:
    assert domain.check_group_name("credit-risk") == "credit-risk"
    with pytest.raises(InvalidInput):
        domain.check_group_name("credit/risk")
