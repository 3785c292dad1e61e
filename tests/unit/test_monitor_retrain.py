"""Retrain on drift: dedupe, cooldown, labels, fresh data, and the challenger decision."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    ChallengerEvaluated,
    DeploymentRequested,
    DriftDetected,
    GroundTruthRecorded,
    ModelApprovalChanged,
    ModelApprovalRequested,
    ModelPackageRegistered,
    RetrainRequested,
    RolloutPolicy,
    TrainingJobRequested,
)
from cairn.contracts.state import ModelLineageView, ModelVersionView, write_state
from cairn.namespaces import confine_channel
from cairn.store.memory import InMemoryObjectStore

from services.monitor.config import MonitorSettings
from services.monitor.domain import (
    RetrainPolicy,
    RetrainPolicyBody,
    decide_promotion,
    decide_retrain,
)
from services.monitor.handlers import Monitor
from services.monitor.retrain import Retrainer
from tests.unit.test_monitor_checks import (
    Published,
    deploy_model,
    labelled_frame,
    write_capture,
    write_xgboost_package,
)


def drift_envelope(run_id: str = "run-1", correlation: str = "drift-corr") -> Envelope[Any]:
    data = DriftDetected(
        endpoint_name="ep",
        run_id=run_id,
        model_package_group="credit",
        model_version=1,
        report_uri=f"monitor/reports/ep/{run_id}/report.json",
    )
    return Envelope[Any](
        type="DriftDetected", source="monitor", correlation_id=correlation, data=data
    )


def test_retrain_decisions_dedupe_cooldown_and_labels() -> None:
    now = datetime.now(UTC)
    policy = RetrainPolicy(
        model_package_group="g",
        endpoint_name="ep",
        cooldown_s=600,
        min_new_labelled_rows=50,
        created_at=now,
        updated_at=now,
    )
    assert decide_retrain(policy, "r1", 49, now)[0] == "not_enough_labels"
    assert decide_retrain(policy, "r1", 50, now)[0] == "retrain"
    recent = policy.model_copy(update={"last_retrain_at": now - timedelta(seconds=60)})
    assert decide_retrain(recent, "r2", 500, now)[0] == "cooldown"
    assert decide_retrain(recent, "r2", 500, now + timedelta(seconds=600))[0] == "retrain"
    handled = policy.model_copy(update={"handled_runs": ["r1"]})
    assert decide_retrain(handled, "r1", 500, now)[0] == "duplicate"


def test_promotion_needs_the_margin_in_the_metric_direction() -> None:
    assert decide_promotion("auc", 0.80, 0.78, 0.01)[0]
    assert not decide_promotion("auc", 0.785, 0.78, 0.01)[0]
    assert decide_promotion("rmse", 1.0, 1.2, 0.1)[0]
    assert not decide_promotion("rmse", 1.2, 1.0, 0.0)[0]
    assert decide_promotion("accuracy", 0.5, None, 0.3)[0]


async def label_capture(store: Any, retrainer: Retrainer, captured: Any) -> None:
    """Captured requests and, delivered twice, their ground truth."""
    write_capture(store, "ep", captured, "req", datetime.now(UTC))
    labels = {f"req-{i}": int(label) for i, label in enumerate(captured["label"])}
    ground_truth = Envelope[Any](
        type="GroundTruthRecorded",
        source="user",
        correlation_id="gt",
        data=GroundTruthRecorded(endpoint_name="ep", labels=labels),
    )
    await retrainer.monitor.on_ground_truth(ground_truth)
    await retrainer.monitor.on_ground_truth(ground_truth)  # redelivered: nothing doubles


@pytest.fixture
def world() -> tuple[InMemoryObjectStore, Published, Retrainer]:
    store = InMemoryObjectStore()
    deploy_model(store, "ep", "credit", 1, "job-1", rounds=3)
    published = Published()
    return store, published, Retrainer(Monitor(store, published, MonitorSettings()))


async def test_same_drift_three_times_retrains_once_on_original_plus_labelled_capture(
    world: tuple[InMemoryObjectStore, Published, Retrainer],
) -> None:
    store, published, retrainer = world
    await retrainer.put_policy(
        "credit", RetrainPolicyBody(endpoint_name="ep", cooldown_s=0, min_new_labelled_rows=100)
    )
    await label_capture(store, retrainer, labelled_frame(300, seed=9, shift=0.5))

    for _ in range(3):
        await retrainer.on_drift(drift_envelope())

    retrains = published.of(RetrainRequested)
    requests = published.of(TrainingJobRequested)
    assert len(retrains) == 1 and len(requests) == 1
    assert all(corr == "drift-corr" for _, corr in published.events)
    request = requests[0]
    assert request.algorithm == "xgboost"
    assert request.hyperparameters == {"num_round": 3, "max_depth": 3}
    assert request.registration.approval_status == "PendingManualApproval"
    for index, channel in enumerate(request.input_channels):  # the trainer will accept them
        assert confine_channel(channel.uri, field=f"input_channels[{index}].uri") == channel.uri
    train = pq.read_table(io.BytesIO(store.get_bytes(request.input_channels[0].uri)))
    holdout_key = f"monitor/retrain/{request.job_name}/holdout.parquet"
    holdout = pq.read_table(io.BytesIO(store.get_bytes(holdout_key)))
    assert train.num_rows + holdout.num_rows == 3000 + 300  # original + labelled captured rows


async def test_cooldown_and_missing_labels_block_a_retrain(
    world: tuple[InMemoryObjectStore, Published, Retrainer],
) -> None:
    _, published, retrainer = world
    await retrainer.put_policy(
        "credit", RetrainPolicyBody(endpoint_name="ep", cooldown_s=3600, min_new_labelled_rows=10)
    )
    await retrainer.on_drift(drift_envelope("run-a"))  # no labels yet
    assert published.of(TrainingJobRequested) == []
    assert "labelled rows" in retrainer.get_policy("credit").skipped["run-a"]

    await retrainer.put_policy(
        "credit", RetrainPolicyBody(endpoint_name="ep", cooldown_s=3600, min_new_labelled_rows=0)
    )
    await retrainer.on_drift(drift_envelope("run-b"))
    await retrainer.on_drift(drift_envelope("run-c"))  # a new drift, but within the cooldown
    assert len(published.of(TrainingJobRequested)) == 1
    assert "cooldown" in retrainer.get_policy("credit").skipped["run-c"]


CANARY = RolloutPolicy(
    mode="canary", canary_percent=20, bake_time_s=10, max_error_rate=0.02, max_p99_latency_ms=250
)


async def judged_challenger(
    world: tuple[InMemoryObjectStore, Published, Retrainer], rounds: int, concept: float
) -> Envelope[Any]:
    """A retrain on drift whose new model (version 2) is registered: the registry's event."""
    store, _, retrainer = world
    policy = RetrainPolicyBody(
        endpoint_name="ep", cooldown_s=0, metric="auc", margin=0.01, rollout=CANARY
    )
    await retrainer.put_policy("credit", policy)
    await label_capture(store, retrainer, labelled_frame(1000, seed=9, sign=concept))
    await retrainer.on_drift(drift_envelope())
    job = next(iter(retrainer.get_policy("credit").jobs.values()))
    challenger_uri = write_xgboost_package(
        store,
        f"models/{job.job_name}/",
        labelled_frame(3000, seed=7, sign=concept),
        job.job_name,
        "x",
        rounds,
    )
    version = ModelVersionView(
        model_package_group="credit",
        version=2,
        artifact_uri=challenger_uri,
        approval_status="PendingManualApproval",
        lineage=ModelLineageView(training_job=job.job_name),
    )
    write_state(store, version, "credit", "2")
    return Envelope[Any](
        type="ModelPackageRegistered",
        source="registry",
        correlation_id="drift-corr",
        data=ModelPackageRegistered(
            model_package_group="credit",
            version=2,
            artifact_uri=challenger_uri,
            approval_status="PendingManualApproval",
            training_job=job.job_name,
        ),
    )


def approval(
    version: int, status: str = "Approved", correlation: str = "drift-corr"
) -> Envelope[Any]:
    data = ModelApprovalChanged(
        model_package_group="credit",
        version=version,
        approval_status=status,  # type: ignore[arg-type]
        previous_status="PendingManualApproval",
        changed_by="cairn-monitor",
    )
    return Envelope[Any](
        type="ModelApprovalChanged", source="registry", correlation_id=correlation, data=data
    )


@pytest.mark.parametrize(("rounds", "concept", "promoted"), [(60, -1.0, True), (1, 1.0, False)])
async def test_challenger_approval_is_requested_only_when_better_by_the_margin(
    world: tuple[InMemoryObjectStore, Published, Retrainer],
    rounds: int,
    concept: float,
    promoted: bool,
) -> None:
    _, published, retrainer = world
    registered = await judged_challenger(world, rounds, concept)
    await retrainer.on_registered(registered)
    await retrainer.on_registered(registered)  # redelivered: judged once

    evaluated = published.of(ChallengerEvaluated)
    assert len(evaluated) == 1
    verdict = evaluated[0]
    assert verdict.promoted is promoted and verdict.champion_version == 1
    assert (verdict.challenger_score > verdict.champion_score + 0.01) is promoted
    requests = published.of(ModelApprovalRequested)
    assert [(r.version, r.approval_status) for r in requests] == (
        [(2, "Approved")] if promoted else []
    )
    job = next(iter(retrainer.get_policy("credit").jobs.values()))
    assert job.evaluation is not None and job.evaluation.reason == verdict.reason
    assert all(corr == "drift-corr" for _, corr in published.events)


async def test_approved_challenger_is_rolled_out_as_the_policys_canary(
    world: tuple[InMemoryObjectStore, Published, Retrainer],
) -> None:
    _, published, retrainer = world
    await retrainer.on_registered(await judged_challenger(world, 60, -1.0))

    await retrainer.on_approval_changed(approval(1))  # the champion: not a challenger of ours
    await retrainer.on_approval_changed(approval(2, "Rejected"))
    assert published.of(DeploymentRequested) == []
    await retrainer.on_approval_changed(approval(2))
    await retrainer.on_approval_changed(approval(2))  # redelivered: the same request again

    deployments = published.of(DeploymentRequested)
    assert len(deployments) == 2 and deployments[0] == deployments[1]
    request = deployments[0]
    assert request.endpoint_name == "ep" and request.action == "update"
    assert [
        (v.variant_name, v.model_package_group, v.model_version)
        for v in request.production_variants
    ] == [("AllTraffic", "credit", 2)]
    assert request.rollout == CANARY
    assert all(corr == "drift-corr" for _, corr in published.events)
    assert next(iter(retrainer.get_policy("credit").jobs.values())).status == "deploy_requested"


async def test_approval_overtaking_the_verdict_still_deploys_and_is_not_undone(
    world: tuple[InMemoryObjectStore, Published, Retrainer],
) -> None:
    """The registry's approval may arrive before the judging handler records its verdict."""
    _, published, retrainer = world
    registered = await judged_challenger(world, 60, -1.0)
    await retrainer.on_approval_changed(approval(2))
    await retrainer.on_registered(registered)

    assert len(published.of(DeploymentRequested)) == 1
    assert [e.challenger_version for e in published.of(ChallengerEvaluated)] == [2]
    job = next(iter(retrainer.get_policy("credit").jobs.values()))
    assert job.status == "deploy_requested" and job.challenger_version == 2
