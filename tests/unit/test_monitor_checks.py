"""Monitor: baselines, data quality, drift decisions, and a run's report layout (in memory)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost
from cairn.artifacts import write_model_package
from cairn.artifacts.manifest import (
    DatasetLineage,
    InputColumn,
    Lineage,
    ModelManifest,
    OutputColumn,
    Signature,
)
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import MonitoringScheduleRequested, VariantState
from cairn.contracts.state import (
    EndpointStateView,
    ModelLineageView,
    ModelVersionView,
    TrainingJobView,
    capture_file_key,
    write_state,
)
from cairn.store.base import ObjectStore
from cairn.store.memory import InMemoryObjectStore
from pydantic import BaseModel

from services.monitor.baseline import compute_baseline, reference_sample
from services.monitor.capture import parse_capture
from services.monitor.checks import check_quality, current_batch
from services.monitor.config import MonitorSettings
from services.monitor.drift import DriftDetector
from services.monitor.handlers import Monitor

FEATURES = 20


def numeric_inputs(count: int = FEATURES) -> list[InputColumn]:
    return [InputColumn(name=f"f{i}", dtype="float") for i in range(count)]


def normal_frame(rows: int, seed: int, shift: dict[int, float] | None = None) -> pd.DataFrame:
    values = np.random.default_rng(seed).normal(size=(rows, FEATURES))
    for column, amount in (shift or {}).items():
        values[:, column] += amount
    return pd.DataFrame(values, columns=[f"f{i}" for i in range(FEATURES)])


def detector_for(
    train: pd.DataFrame,
    correction: str = "bonferroni",
    inputs: list[InputColumn] | None = None,
    max_values: int = 100_000,
) -> DriftDetector:
    """The monitor's detector for a training frame (its baseline and reference sample)."""
    stats, constraints = compute_baseline(
        train,
        inputs or numeric_inputs(train.shape[1]),
        group="g",
        version=1,
        label_column=None,
        sketch_size=1001,
    )
    reference = reference_sample(train, stats, max_values=max_values)
    return DriftDetector(stats, constraints, reference, p_value=0.05, correction=correction)  # type: ignore[arg-type]


def test_baseline_describes_numeric_and_categorical_features() -> None:
    frame = pd.DataFrame(
        {
            "age": [30, 40, None, 50],
            "housing": ["own", "rent", "own", None],
        }
    )
    inputs = [
        InputColumn(name="age", dtype="int"),
        InputColumn(name="housing", dtype="category", categories=["own", "rent"]),
    ]
    stats, constraints = compute_baseline(
        frame, inputs, group="credit", version=3, label_column="default", sketch_size=11
    )
    age, housing = stats.features
    assert (age.inferred_type, age.num_present, age.completeness) == ("Integral", 3, 0.75)
    assert age.numerical_statistics is not None
    assert age.numerical_statistics.mean == pytest.approx(40.0)
    assert len(age.numerical_statistics.quantiles) == 11
    assert (
        age.numerical_statistics.quantiles[0] == 30 and age.numerical_statistics.quantiles[-1] == 50
    )
    assert housing.string_statistics is not None
    assert housing.string_statistics.frequencies == pytest.approx({"own": 2 / 3, "rent": 1 / 3})
    assert constraints.features[1].string_domain == ["own", "rent"]
    assert constraints.features[0].completeness == 0.75


def test_quality_flags_columns_types_completeness_and_unseen_categories() -> None:
    train = pd.DataFrame({"x": np.arange(100.0), "c": ["a", "b"] * 50})
    inputs = [
        InputColumn(name="x", dtype="float"),
        InputColumn(name="c", dtype="category", categories=["a", "b"]),
    ]
    _, constraints = compute_baseline(
        train, inputs, group="g", version=1, label_column=None, sketch_size=11
    )
    lines = [_capture_line(f"{i},a") for i in range(50)]
    lines += [_capture_line("oops,zzz") for _ in range(10)]
    lines += [_capture_line(",b") for _ in range(40)]  # x missing in 40% of rows
    lines += [_capture_line("1,a,extra")]
    rows, bad = parse_capture(lines)
    batch = current_batch(rows, ["x", "c"])
    violations = check_quality(batch, constraints)
    kinds = {violation.split(":")[0] for violation in violations}
    assert bad == 0
    assert kinds == {"malformed_rows", "type_mismatch", "completeness", "unseen_categories"}
    assert any("zzz" in violation for violation in violations)

    records = [{"x": 1.0}, {"x": 2.0, "new": 1}]
    dict_batch = current_batch(parse_capture([_json_capture(records)])[0], ["x", "c"])
    dict_kinds = {v.split(":")[0] for v in check_quality(dict_batch, constraints)}
    assert {"missing_column", "extra_columns"} <= dict_kinds


def test_no_false_alarms_on_same_distribution() -> None:
    detector = detector_for(normal_frame(20_000, seed=1))
    flagged = 0
    trials = 20
    for trial in range(trials):
        current = normal_frame(1000, seed=100 + trial).to_numpy()
        flagged += sum(r.drifted for r in detector.check(current, max_rows=10_000, seed=trial))
    assert flagged / (trials * FEATURES) <= 0.05


def test_shift_of_a_tenth_of_the_features_is_flagged_with_statistics() -> None:
    detector = detector_for(normal_frame(20_000, seed=1), correction="fdr")
    for trial in range(5):
        current = normal_frame(1000, seed=200 + trial, shift={3: 0.3, 11: 0.3}).to_numpy()
        results = detector.check(current, max_rows=10_000, seed=trial)
        drifted = {r.feature for r in results if r.drifted}
        assert drifted & {"f3", "f11"}, f"trial {trial}: nothing flagged"
        assert drifted <= {"f3", "f11"}
        f3 = results[3]
        assert f3.test == "ks" and 0 < f3.statistic < 1 and 0 <= f3.p_value <= 1


# A monitored endpoint in an in-memory store: model package, training data, endpoint document.


def _capture_line(csv_row: str, inference_id: str | None = None, output: str = "0.5") -> str:
    metadata: dict[str, Any] = {"eventId": "e", "inferenceTime": "2026-01-01T00:00:00.000000Z"}
    if inference_id is not None:
        metadata["inferenceId"] = inference_id
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "text/csv",
                    "mode": "INPUT",
                    "data": csv_row,
                    "encoding": "CSV",
                },
                "endpointOutput": {
                    "observedContentType": "text/csv",
                    "mode": "OUTPUT",
                    "data": output + "\n",
                    "encoding": "CSV",
                },
            },
            "eventMetadata": metadata,
            "eventVersion": "0",
        }
    )


def _json_capture(records: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "application/json",
                    "data": json.dumps({"instances": records}),
                    "encoding": "JSON",
                },
                "endpointOutput": {
                    "observedContentType": "application/json",
                    "data": json.dumps({"predictions": [{"score": 0.1}] * len(records)}),
                    "encoding": "JSON",
                },
            },
            "eventMetadata": {"eventId": "e", "inferenceTime": "2026-01-01T00:00:00Z"},
        }
    )


def labelled_frame(rows: int, seed: int, shift: float = 0.0, sign: float = 1.0) -> pd.DataFrame:
    """Five numeric features; the label depends on f0 and f1 (`sign` -1 reverses the concept)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, 5))
    values[:, :2] += shift
    logits = sign * (1.5 * values[:, 0] - values[:, 1])
    label = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(int)
    frame = pd.DataFrame(values, columns=[f"f{i}" for i in range(5)])
    frame["label"] = label
    return frame


def write_xgboost_package(
    store: ObjectStore, prefix: str, frame: pd.DataFrame, job: str, data_key: str, rounds: int
) -> str:
    """Train a small booster on `frame` and store it as a model package."""
    features = [c for c in frame.columns if c != "label"]
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(frame[features].to_numpy(np.float32), label=frame["label"]),
        num_boost_round=rounds,
    )
    manifest = ModelManifest(
        framework="xgboost",
        framework_version=xgboost.__version__,
        algorithm="xgboost",
        task="binary_classification",
        signature=Signature(
            inputs=[InputColumn(name=name, dtype="float") for name in features],
            outputs=[OutputColumn(name="score")],
        ),
        label_column="label",
        class_labels=["0", "1"],
        lineage=Lineage(
            training_job=job,
            algorithm="xgboost",
            hyperparameters={"num_round": rounds},
            datasets=[DatasetLineage(channel="train", uri=data_key, sha256="x")],
        ),
    )
    return write_model_package(
        store, prefix, manifest, {"model.ubj": bytes(booster.save_raw("ubj"))}
    )


def deploy_model(
    store: ObjectStore, endpoint: str, group: str, version: int, job: str, rounds: int = 20
) -> pd.DataFrame:
    """Training data, a package, and the registry/trainer/deployer documents for it."""
    train = labelled_frame(3000, seed=version)
    buffer = io.StringIO()
    train.to_csv(buffer, index=False)
    data_key = f"data/{job}/train.csv"
    store.put_bytes(data_key, buffer.getvalue().encode())
    uri = write_xgboost_package(store, f"models/{job}/", train, job, data_key, rounds)
    write_state(
        store,
        ModelVersionView(
            model_package_group=group,
            version=version,
            artifact_uri=uri,
            approval_status="Approved",
            lineage=ModelLineageView(training_job=job),
        ),
        group,
        str(version),
    )
    request = {
        "job_name": job,
        "algorithm": "xgboost",
        "hyperparameters": {"num_round": rounds, "max_depth": 3},
        "input_channels": [{"name": "train", "uri": data_key, "label_column": "label"}],
    }
    write_state(store, TrainingJobView(job_name=job, request=request, status="Completed"), job)
    write_endpoint(store, endpoint, group, version, uri)
    return train


def write_endpoint(store: ObjectStore, endpoint: str, group: str, version: int, uri: str) -> None:
    """The deployer's state of an endpoint serving one model version."""
    variant = VariantState(
        variant_name="AllTraffic",
        model_package_group=group,
        model_version=version,
        artifact_uri=uri,
        weight=1.0,
        instance_count=1,
    )
    state = EndpointStateView(
        endpoint_name=endpoint, revision=1, status="InService", production_variants=[variant]
    )
    write_state(store, state, endpoint)


def write_capture(
    store: ObjectStore, endpoint: str, frame: pd.DataFrame, id_prefix: str, at: datetime
) -> None:
    features = [c for c in frame.columns if c != "label"]
    lines = [
        _capture_line(",".join(f"{v:.6f}" for v in row), f"{id_prefix}-{i}")
        for i, row in enumerate(frame[features].to_numpy())
    ]
    key = capture_file_key(endpoint, "AllTraffic", at, f"{at:%M-%S}-000-{id_prefix}")
    store.put_bytes(key, ("\n".join(lines) + "\n").encode())


class Published:
    """Collects what a handler publishes (with the correlation it would carry)."""

    def __init__(self) -> None:
        self.events: list[tuple[BaseModel, str | None]] = []

    async def __call__(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]:
        correlation = correlation_id or (cause.correlation_id if cause else "new")
        self.events.append((data, correlation))
        return Envelope[Any](
            type=type(data).__name__, source="monitor", correlation_id=correlation, data=data
        )

    def of(self, kind: type[BaseModel]) -> list[Any]:
        return [event for event, _ in self.events if isinstance(event, kind)]


async def test_run_writes_report_with_charts_and_survives_a_restart() -> None:
    store = InMemoryObjectStore()
    config = MonitorSettings(instance_id="a", run_lease_s=0)
    deploy_model(store, "ep", "credit", 1, "job-1")
    write_capture(store, "ep", labelled_frame(600, seed=50, shift=0.8), "r", datetime.now(UTC))
    published = Published()
    monitor = Monitor(store, published, config)
    monitor.apply_schedule(
        MonitoringScheduleRequested(endpoint_name="ep", interval_s=60, min_rows=100)
    )
    # The first attempt dies after claiming its window (as a killed process would).
    crash = RuntimeError("killed")

    def die(*_: Any) -> None:
        raise crash

    monitor.executor.execute = die  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await monitor.run_endpoint("ep", now=datetime.now(UTC) + timedelta(seconds=2))
    claimed = monitor.get_schedule("ep").pending_run
    assert claimed is not None

    restarted = Monitor(store, published, MonitorSettings(instance_id="b", run_lease_s=0))
    summary = await restarted.run_endpoint("ep", now=datetime.now(UTC) + timedelta(seconds=3))
    assert summary is not None and summary.run_id == claimed.run_id
    assert await restarted.run_endpoint("ep", now=datetime.now(UTC) + timedelta(seconds=4)) is None

    from cairn.contracts.events import DriftDetected, MonitoringRunCompleted

    assert [e.run_id for e in published.of(MonitoringRunCompleted)] == [claimed.run_id]
    drift = published.of(DriftDetected)
    assert len(drift) == 1 and {f.feature for f in drift[0].features} >= {"f0", "f1"}
    report = json.loads(store.get_bytes(summary.report_uri))
    assert report["summary"]["rows_checked"] == 600
    assert {f["feature"] for f in report["features"]} == {f"f{i}" for i in range(5)}
    assert store.get_bytes(report["charts"]["f0"]).startswith(b"\x89PNG")
    assert store.exists("monitor/baselines/credit/1/statistics.json")
    assert store.exists("monitor/baselines/credit/1/constraints.json")
    schedule = restarted.get_schedule("ep")
    assert schedule.pending_run is None and schedule.runs_completed == 1
    assert [run.run_id for run in restarted.list_runs("ep")] == [claimed.run_id]
