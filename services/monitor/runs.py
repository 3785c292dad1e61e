"""One monitoring run: a window's captured rows against the baseline -> report, summary, charts."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.documents import DocumentStore
from cairn.errors import PreconditionFailed
from cairn.store.base import ObjectStore
from pydantic import BaseModel, Field, RootModel

from services.monitor.baseline_store import Baseline, Baselines
from services.monitor.capture import CapturedRow
from services.monitor.charts import FeatureDistribution, binned_distribution, drift_chart
from services.monitor.checks import (
    CurrentBatch,
    check_quality,
    current_batch,
    encode_batch,
    quality_metrics,
)
from services.monitor.config import MonitorSettings
from services.monitor.domain import GROUND_TRUTH, REPORTS, PendingRun, RunSummary, Schedule
from services.monitor.drift import FeatureResult
from services.monitor.storage import readable
from services.monitor.views import ServedModel

_JSON = "application/json"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Labels(RootModel[dict[str, float | int | str]]):
    """`monitor/ground-truth/<endpoint>/<event-id>.json`: labels by inference key."""


class RunReport(BaseModel):
    """`monitor/reports/<endpoint>/<run-id>/report.json`: everything one run found."""

    summary: RunSummary
    variant_name: str
    baseline: dict[str, str]
    drift: dict[str, Any]
    features: list[FeatureResult] = Field(default_factory=list)
    charts: dict[str, str] = Field(default_factory=dict)
    distributions: dict[str, FeatureDistribution] = Field(
        default_factory=dict, description="Reference vs current shares per feature, binned alike."
    )
    model_quality: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class Checked:
    """A run's batch, encoded for the drift test, and the test's results."""

    batch: CurrentBatch
    matrix: npt.NDArray[np.float64]
    violations: list[str]
    results: list[FeatureResult]


class RunExecutor:
    """Checks a claimed window; a restarted run whose report exists returns that report."""

    def __init__(
        self,
        store: ObjectStore,
        baselines: Baselines,
        runs: DocumentStore[RunSummary],
        config: MonitorSettings,
    ) -> None:
        self.store = store
        self.baselines = baselines
        self.runs = runs
        self.config = config
        self.reports: DocumentStore[RunReport] = DocumentStore(store, RunReport, REPORTS)
        self.labels: DocumentStore[Labels] = DocumentStore(store, Labels, GROUND_TRUTH)

    def execute(
        self, schedule: Schedule, pending: PendingRun, served: ServedModel, rows: list[CapturedRow]
    ) -> RunReport:
        """Check the rows, write charts, the report and the run summary (each once)."""
        endpoint, run_id = schedule.endpoint_name, pending.run_id
        existing = self.reports.get_or_none(f"{endpoint}/{run_id}/report.json")
        if existing is not None:
            return existing.doc
        baseline, _ = self.baselines.ensure(served.group, served.version, served.artifact_uri)
        checked = self._check(baseline, schedule, rows, run_id)
        summary = self._summary(schedule, pending, served, checked, baseline)
        report = RunReport(
            summary=summary,
            variant_name=served.variant_name,
            baseline={
                "statistics_uri": baseline.statistics_key,
                "constraints_uri": baseline.constraints_key,
            },
            drift={
                "p_value": schedule.drift_p_value,
                "correction": schedule.correction,
                "tested_rows": min(len(checked.matrix), self.config.max_current_rows),
            },
            features=checked.results,
            charts=self._charts(baseline, schedule, checked, f"{REPORTS}/{endpoint}/{run_id}/"),
            distributions=self._distributions(baseline, schedule, checked),
            model_quality=summary.quality_metrics,
        )
        with contextlib.suppress(PreconditionFailed):
            self.reports.create(f"{endpoint}/{run_id}/report.json", report)
        with contextlib.suppress(PreconditionFailed):
            self.runs.create(f"{endpoint}/{run_id}.json", summary)
        return report

    def _check(
        self, baseline: Baseline, schedule: Schedule, rows: list[CapturedRow], run_id: str
    ) -> Checked:
        names = [feature.name for feature in baseline.statistics.features]
        batch = current_batch(rows, names)
        matrix = encode_batch(batch, baseline.constraints)
        results: list[FeatureResult] = []
        if len(matrix):
            seed = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)
            detector = self.baselines.detector(baseline, schedule)
            results = detector.check(matrix, max_rows=self.config.max_current_rows, seed=seed)
        return Checked(batch, matrix, check_quality(batch, baseline.constraints), results)

    def _summary(
        self,
        schedule: Schedule,
        pending: PendingRun,
        served: ServedModel,
        checked: Checked,
        baseline: Baseline,
    ) -> RunSummary:
        endpoint, run_id = schedule.endpoint_name, pending.run_id
        return RunSummary(
            endpoint_name=endpoint,
            run_id=run_id,
            window_start=pending.window_start,
            window_end=pending.window_end,
            model_package_group=served.group,
            model_version=served.version,
            rows_checked=len(checked.matrix),
            drifted_features=[result.feature for result in checked.results if result.drifted],
            violations=checked.violations,
            quality_metrics=self._model_quality(endpoint, baseline, checked.batch),
            report_uri=f"{REPORTS}/{endpoint}/{run_id}/report.json",
            completed_at=utc_now(),
        )

    def _model_quality(
        self, endpoint: str, baseline: Baseline, batch: CurrentBatch
    ) -> dict[str, float]:
        """Quality metrics over the batch's rows that have ground truth."""
        labels = self.load_labels(endpoint)
        joined = [
            (prediction, labels[key])
            for key, prediction in zip(batch.inference_keys, batch.predictions, strict=True)
            if key is not None and key in labels
        ]
        return quality_metrics(
            baseline.task,
            baseline.class_labels,
            [prediction for prediction, _ in joined],
            [label for _, label in joined],
        )

    def _charts(
        self, baseline: Baseline, schedule: Schedule, checked: Checked, prefix: str
    ) -> dict[str, str]:
        """One PNG per drifted feature; feature -> store key."""
        detector = self.baselines.detector(baseline, schedule)
        charts: dict[str, str] = {}
        for index, result in enumerate(checked.results):
            if not result.drifted:
                continue
            png = drift_chart(
                result,
                detector.reference_values(index),
                checked.matrix[:, index],
                baseline.constraints.features[index].string_domain,
            )
            key = f"{prefix}{result.feature}.png"
            self.store.put_bytes(key, png, content_type="image/png")
            charts[result.feature] = key
        return charts

    def _distributions(
        self, baseline: Baseline, schedule: Schedule, checked: Checked
    ) -> dict[str, FeatureDistribution]:
        """Every tested feature's reference and current shares (a few hundred numbers each)."""
        detector = self.baselines.detector(baseline, schedule)
        return {
            result.feature: binned_distribution(
                detector.reference_values(index),
                checked.matrix[:, index],
                baseline.constraints.features[index].string_domain,
            )
            for index, result in enumerate(checked.results)
        }

    # Ground truth ------------------------------------------------------------------------------

    def load_labels(self, endpoint: str) -> dict[str, float | int | str]:
        """Every ground-truth label recorded for an endpoint, by inference key."""
        labels: dict[str, float | int | str] = {}
        for item in readable(self.labels, f"{endpoint}/"):
            labels.update(item.root)
        return labels

    def record_labels(self, endpoint: str, event_id: str, labels: dict[str, Any]) -> None:
        """Keep the labels (one create-only object per event: a redelivery changes nothing)."""
        with contextlib.suppress(PreconditionFailed):
            self.labels.create(f"{endpoint}/{event_id}.json", Labels(labels))
