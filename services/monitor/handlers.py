"""The monitor's handlers: baselines, schedules and runs, ground truth (retraining: retrain.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    BaselineComputed,
    DriftDetected,
    EndpointUpdated,
    FeatureDrift,
    GroundTruthRecorded,
    InferenceCaptured,
    MonitoringRunCompleted,
    MonitoringScheduleRequested,
)
from cairn.documents import DocumentStore
from cairn.errors import InvalidInput, ObjectNotFound, PreconditionFailed
from cairn.store.base import ObjectStore
from pydantic import BaseModel

from services.monitor.baseline import Constraints, Statistics, compute_baseline
from services.monitor.charts import drift_chart
from services.monitor.checks import (
    CapturedRow,
    DriftDetector,
    FeatureResult,
    check_quality,
    current_batch,
    encode_batch,
    parse_capture,
    quality_metrics,
)
from services.monitor.config import MonitorSettings
from services.monitor.domain import (
    BASELINES,
    GROUND_TRUTH,
    REPORTS,
    RUNS,
    SCHEDULES,
    PendingRun,
    RunSummary,
    Schedule,
    ScheduleNotFound,
    can_take_over,
    is_due,
    window_end_for,
    window_run_id,
)
from services.monitor.storage import capture_files, read_json, read_table

log = logging.getLogger("cairn.monitor")


class Publisher(Protocol):
    async def __call__(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Baseline:
    group: str
    version: int
    statistics: Statistics
    constraints: Constraints
    statistics_key: str
    constraints_key: str
    task: str
    class_labels: list[str] | None


@dataclass(frozen=True)
class ServedModel:
    """The model behind an endpoint's primary (highest-weight) production variant."""

    variant_name: str
    group: str
    version: int
    artifact_uri: str


def baseline_prefix(group: str, version: int) -> str:
    return f"{BASELINES}/{group}/{version}/"


def model_prefix(store: ObjectStore, artifact_uri: str) -> str:
    root = store.url.rstrip("/") + "/"
    key = artifact_uri[len(root) :] if artifact_uri.startswith(root) else artifact_uri
    return key.strip("/") + "/"


class Monitor:
    """Baselines once per model version; runs per schedule window, each completed exactly once."""

    def __init__(self, store: ObjectStore, publish: Publisher, config: MonitorSettings) -> None:
        self.store = store
        self.publish = publish
        self.config = config
        self.schedules: DocumentStore[Schedule] = DocumentStore(store, Schedule, SCHEDULES)
        self.runs: DocumentStore[RunSummary] = DocumentStore(store, RunSummary, RUNS)
        self._baselines: dict[tuple[str, int], Baseline] = {}
        self._detectors: dict[tuple[str, int, float, str], DriftDetector] = {}
        self._captured_rows: dict[str, int] = defaultdict(int)
        self._running: set[str] = set()

    # Baselines ---------------------------------------------------------------------------------

    def manifest(self, artifact_uri: str) -> dict[str, Any]:
        manifest = read_json(self.store, model_prefix(self.store, artifact_uri) + "manifest.json")
        if manifest is None:
            raise ObjectNotFound(f"no model package manifest at {artifact_uri}")
        return manifest

    def ensure_baseline(self, group: str, version: int, artifact_uri: str) -> tuple[Baseline, bool]:
        """The version's baseline, computed from its training data if it is not stored yet."""
        cached = self._baselines.get((group, version))
        if cached is not None:
            return cached, False
        prefix = baseline_prefix(group, version)
        stats_key, constraints_key = prefix + "statistics.json", prefix + "constraints.json"
        manifest = self.manifest(artifact_uri)
        created = False
        try:
            raw_stats = self.store.get_bytes(stats_key)
            raw_constraints = self.store.get_bytes(constraints_key)
            statistics = Statistics.model_validate_json(raw_stats)
            constraints = Constraints.model_validate_json(raw_constraints)
        except ObjectNotFound:
            statistics, constraints = self._compute_baseline(group, version, manifest)
            # constraints first, statistics last: statistics.json marks a complete baseline.
            self.store.put_bytes(
                constraints_key, constraints.model_dump_json(indent=1).encode(), content_type=_JSON
            )
            try:
                self.store.put_bytes(
                    stats_key,
                    statistics.model_dump_json().encode(),
                    content_type=_JSON,
                    if_none_match=True,
                )
                created = True
            except PreconditionFailed:  # another replica won; use its (identical) baseline
                statistics = Statistics.model_validate_json(self.store.get_bytes(stats_key))
        baseline = Baseline(
            group,
            version,
            statistics,
            constraints,
            stats_key,
            constraints_key,
            str(manifest.get("task", "")),
            manifest.get("class_labels"),
        )
        self._baselines[(group, version)] = baseline
        return baseline, created

    def _compute_baseline(
        self, group: str, version: int, manifest: dict[str, Any]
    ) -> tuple[Statistics, Constraints]:
        from cairn.artifacts.manifest import InputColumn

        datasets = manifest.get("lineage", {}).get("datasets", [])
        train = next((d for d in datasets if d.get("channel") == "train"), None) or (
            datasets[0] if datasets else None
        )
        if train is None:
            raise InvalidInput(f"model {group} v{version} has no training data in its lineage")
        inputs = [InputColumn.model_validate(c) for c in manifest["signature"]["inputs"]]
        frame = read_table(self.store, train["uri"])
        return compute_baseline(
            frame,
            inputs,
            group=group,
            version=version,
            label_column=manifest.get("label_column"),
            sketch_size=self.config.sketch_size,
        )

    async def on_endpoint_updated(self, envelope: Envelope[EndpointUpdated]) -> None:
        """Baseline every model an endpoint now serves (once per version)."""
        for variant in envelope.data.production_variants:
            baseline, created = await asyncio.to_thread(
                self.ensure_baseline,
                variant.model_package_group,
                variant.model_version,
                variant.artifact_uri,
            )
            if created:
                await self.publish(
                    BaselineComputed(
                        model_package_group=baseline.group,
                        model_version=baseline.version,
                        statistics_uri=baseline.statistics_key,
                        constraints_uri=baseline.constraints_key,
                        row_count=baseline.statistics.item_count,
                    ),
                    cause=envelope,
                )

    def detector(self, baseline: Baseline, schedule: Schedule) -> DriftDetector:
        key = (baseline.group, baseline.version, schedule.drift_p_value, schedule.correction)
        found = self._detectors.get(key)
        if found is None:
            found = self._detectors[key] = DriftDetector(
                baseline.statistics,
                baseline.constraints,
                p_value=schedule.drift_p_value,
                correction=schedule.correction,
                sketch_size=self.config.sketch_size,
            )
        return found

    # Schedules ---------------------------------------------------------------------------------

    def apply_schedule(self, request: MonitoringScheduleRequested) -> Schedule | None:
        """Create, update or delete an endpoint's schedule; keeps the watermark on update."""
        name = request.endpoint_name
        if request.action == "delete":
            self.schedules.delete(f"{name}.json")
            return None
        now = utc_now()

        def change(current: Schedule | None) -> Schedule:
            fields = {
                "interval_s": request.interval_s,
                "drift_p_value": request.drift_p_value,
                "correction": request.correction,
                "min_rows": request.min_rows,
            }
            if current is None:
                return Schedule(
                    endpoint_name=name,
                    next_run_at=now + timedelta(seconds=request.interval_s),
                    created_at=now,
                    updated_at=now,
                    **fields,
                )
            if all(getattr(current, key) == value for key, value in fields.items()):
                return current
            return current.model_copy(update={**fields, "updated_at": now})

        return self.schedules.update(f"{name}.json", change).doc

    def get_schedule(self, endpoint: str) -> Schedule:
        found = self.schedules.get_or_none(f"{endpoint}.json")
        if found is None:
            raise ScheduleNotFound(f"no monitoring schedule for endpoint {endpoint!r}")
        return found.doc

    def list_schedules(self) -> list[Schedule]:
        return [item.doc for item in self.schedules.list()]

    def list_runs(self, endpoint: str) -> list[RunSummary]:
        return [item.doc for item in self.runs.list(f"{endpoint}/")]

    async def on_schedule_requested(self, envelope: Envelope[MonitoringScheduleRequested]) -> None:
        await asyncio.to_thread(self.apply_schedule, envelope.data)

    def on_inference_captured(self, event: InferenceCaptured) -> None:
        """Count captured rows; enough of them make the next tick run the endpoint early."""
        self._captured_rows[event.endpoint_name] += event.record_count

    # Runs --------------------------------------------------------------------------------------

    async def run_due(self) -> list[RunSummary]:
        """Run every schedule that is due (or has enough new captured rows)."""
        now = utc_now()
        completed: list[RunSummary] = []
        for schedule in await asyncio.to_thread(self.list_schedules):
            early = self._captured_rows[schedule.endpoint_name] >= self.config.early_check_rows
            if not (is_due(schedule, now) or early):
                continue
            try:
                summary = await self.run_endpoint(schedule.endpoint_name, now=now)
            except Exception:
                log.exception("monitoring run of %s failed", schedule.endpoint_name)
                continue
            if summary is not None:
                completed.append(summary)
        return completed

    async def run_forever(self) -> None:
        """The schedule loop (the API lifespan starts and cancels it); survives errors."""
        while True:
            try:
                await self.run_due()
            except Exception:
                log.exception("schedule loop failed; retrying")
            await asyncio.sleep(self.config.tick_s)

    async def run_endpoint(self, endpoint: str, now: datetime | None = None) -> RunSummary | None:
        """Claim the endpoint's next window, check it, report and publish; None when it waits."""
        if endpoint in self._running:
            return None
        self._running.add(endpoint)
        try:
            now = now or utc_now()
            claimed = await asyncio.to_thread(self._claim, endpoint, now)
            if claimed is None:
                return None
            schedule, pending, served, rows = claimed
            self._captured_rows[endpoint] = 0
            summary, results = await asyncio.to_thread(
                self._execute, schedule, pending, served, rows
            )
            await self._announce(summary, results)
            await asyncio.to_thread(self._finish, endpoint, pending.run_id, now)
            return summary
        finally:
            self._running.discard(endpoint)

    def served_model(self, endpoint: str) -> ServedModel | None:
        document = read_json(self.store, f"deployer/endpoints/{endpoint}.json")
        variants = (document or {}).get("production_variants") or []
        if not variants or (document or {}).get("status") == "Deleted":
            return None
        primary = max(variants, key=lambda variant: float(variant.get("weight", 0)))
        return ServedModel(
            primary["variant_name"],
            primary["model_package_group"],
            int(primary["model_version"]),
            primary["artifact_uri"],
        )

    def _claim(
        self, endpoint: str, now: datetime
    ) -> tuple[Schedule, PendingRun, ServedModel, list[CapturedRow]] | None:
        schedule = self.get_schedule(endpoint)
        served = self.served_model(endpoint)
        if served is None:
            self._postpone(endpoint, now)
            return None
        pending = schedule.pending_run
        if pending is not None:
            if not can_take_over(pending, self.config.instance_id, now, self.config.run_lease_s):
                return None
            pending = pending.model_copy(
                update={"claimed_by": self.config.instance_id, "claimed_at": now}
            )
        else:
            end = window_end_for(now)
            if schedule.watermark is not None and end <= schedule.watermark:
                return None
            pending = PendingRun(
                run_id=window_run_id(endpoint, schedule.watermark, end),
                window_start=schedule.watermark,
                window_end=end,
                claimed_by=self.config.instance_id,
                claimed_at=now,
            )
        rows = self.captured_rows(endpoint, served.variant_name, pending)
        if schedule.pending_run is None and len(rows) < schedule.min_rows:
            self._postpone(endpoint, now)
            return None
        expected = schedule.pending_run

        def claim(current: Schedule | None) -> Schedule:
            if current is None or current.pending_run != expected:
                raise PreconditionFailed(f"schedule of {endpoint} changed while claiming")
            return current.model_copy(update={"pending_run": pending})

        try:
            schedule = self.schedules.update(f"{endpoint}.json", claim).doc
        except PreconditionFailed:
            return None
        return schedule, pending, served, rows

    def _postpone(self, endpoint: str, now: datetime) -> None:
        def later(current: Schedule | None) -> Schedule:
            if current is None:
                raise ScheduleNotFound(f"no monitoring schedule for endpoint {endpoint!r}")
            next_at = now + timedelta(seconds=current.interval_s)
            return current.model_copy(update={"next_run_at": next_at})

        with contextlib.suppress(ScheduleNotFound):
            self.schedules.update(f"{endpoint}.json", later)

    def captured_rows(
        self, endpoint: str, variant: str | None, pending: PendingRun
    ) -> list[CapturedRow]:
        files = capture_files(
            self.store,
            self.config.capture_prefix,
            endpoint,
            variant,
            pending.window_start,
            pending.window_end,
        )
        rows: list[CapturedRow] = []
        for info in sorted(files, key=lambda item: item.key):
            parsed, _ = parse_capture(self.store.get_bytes(info.key).decode().splitlines())
            rows.extend(parsed)
        return rows

    def load_labels(self, endpoint: str) -> dict[str, float | int | str]:
        """Every ground-truth label recorded for an endpoint, by inference key."""
        labels: dict[str, float | int | str] = {}
        for info in self.store.list(f"{GROUND_TRUTH}/{endpoint}/"):
            labels.update(json.loads(self.store.get_bytes(info.key)))
        return labels

    def _execute(
        self, schedule: Schedule, pending: PendingRun, served: ServedModel, rows: list[CapturedRow]
    ) -> tuple[RunSummary, list[FeatureResult]]:
        endpoint, run_id = schedule.endpoint_name, pending.run_id
        report_prefix = f"{REPORTS}/{endpoint}/{run_id}/"
        existing = read_json(self.store, report_prefix + "report.json")
        if existing is not None:  # a restarted run whose report was already written
            summary = RunSummary.model_validate(existing["summary"])
            return summary, [FeatureResult(**item) for item in existing["features"]]
        baseline, _ = self.ensure_baseline(served.group, served.version, served.artifact_uri)
        names = [feature.name for feature in baseline.statistics.features]
        batch = current_batch(rows, names)
        violations = check_quality(batch, baseline.constraints)
        matrix = encode_batch(batch, baseline.constraints)
        results: list[FeatureResult] = []
        if len(matrix):
            seed = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)
            results = self.detector(baseline, schedule).check(
                matrix, max_rows=self.config.max_current_rows, seed=seed
            )
        labels = self.load_labels(endpoint)
        joined = [
            (prediction, labels[key])
            for key, prediction in zip(batch.inference_keys, batch.predictions, strict=True)
            if key is not None and key in labels
        ]
        metrics = quality_metrics(
            baseline.task,
            baseline.class_labels,
            [prediction for prediction, _ in joined],
            [label for _, label in joined],
        )
        charts: dict[str, str] = {}
        detector = self.detector(baseline, schedule)
        for index, result in enumerate(results):
            if result.drifted:
                key = f"{report_prefix}{result.feature}.png"
                png = drift_chart(
                    result,
                    detector.reference[:, index],
                    matrix[:, index],
                    baseline.constraints.features[index].string_domain,
                )
                self.store.put_bytes(key, png, content_type="image/png")
                charts[result.feature] = key
        summary = RunSummary(
            endpoint_name=endpoint,
            run_id=run_id,
            window_start=pending.window_start,
            window_end=pending.window_end,
            model_package_group=served.group,
            model_version=served.version,
            rows_checked=len(matrix),
            drifted_features=[result.feature for result in results if result.drifted],
            violations=violations,
            quality_metrics=metrics,
            report_uri=report_prefix + "report.json",
            completed_at=utc_now(),
        )
        report = {
            "summary": summary.model_dump(mode="json"),
            "variant_name": served.variant_name,
            "baseline": {
                "statistics_uri": baseline.statistics_key,
                "constraints_uri": baseline.constraints_key,
            },
            "drift": {
                "p_value": schedule.drift_p_value,
                "correction": schedule.correction,
                "tested_rows": min(len(matrix), self.config.max_current_rows),
            },
            "features": [result.__dict__ for result in results],
            "charts": charts,
            "model_quality": metrics,
        }
        with contextlib.suppress(PreconditionFailed):
            self.store.put_bytes(
                summary.report_uri,
                json.dumps(report, indent=1).encode(),
                content_type=_JSON,
                if_none_match=True,
            )
        with contextlib.suppress(PreconditionFailed):
            self.runs.create(f"{endpoint}/{run_id}.json", summary)
        return summary, results

    async def _announce(self, summary: RunSummary, results: list[FeatureResult]) -> None:
        correlation = f"monitor-{summary.endpoint_name}-{summary.run_id}"
        await self.publish(
            MonitoringRunCompleted(
                endpoint_name=summary.endpoint_name,
                run_id=summary.run_id,
                model_package_group=summary.model_package_group,
                model_version=summary.model_version,
                rows_checked=summary.rows_checked,
                report_uri=summary.report_uri,
                violations=summary.violations,
                drifted_features=summary.drifted_features,
                quality_metrics=summary.quality_metrics,
            ),
            correlation_id=correlation,
        )
        if summary.drifted_features or summary.violations:
            await self.publish(
                DriftDetected(
                    endpoint_name=summary.endpoint_name,
                    run_id=summary.run_id,
                    model_package_group=summary.model_package_group,
                    model_version=summary.model_version,
                    features=[
                        FeatureDrift(
                            feature=r.feature,
                            test=r.test,
                            statistic=r.statistic,
                            p_value=r.p_value,
                            threshold=r.threshold,
                        )
                        for r in results
                        if r.drifted
                    ],
                    violations=summary.violations,
                    report_uri=summary.report_uri,
                ),
                correlation_id=correlation,
            )

    def _finish(self, endpoint: str, run_id: str, now: datetime) -> None:
        def done(current: Schedule | None) -> Schedule:
            if current is None:
                raise ScheduleNotFound(f"schedule of {endpoint} was deleted during a run")
            pending = current.pending_run
            if pending is None or pending.run_id != run_id:
                return current
            return current.model_copy(
                update={
                    "pending_run": None,
                    "watermark": pending.window_end,
                    "last_run_id": run_id,
                    "runs_completed": current.runs_completed + 1,
                    "next_run_at": now + timedelta(seconds=current.interval_s),
                }
            )

        with contextlib.suppress(ScheduleNotFound):
            self.schedules.update(f"{endpoint}.json", done)

    # Ground truth ------------------------------------------------------------------------------

    def record_ground_truth(self, endpoint: str, event_id: str, labels: dict[str, Any]) -> None:
        """Keep the labels (one create-only object per event: a redelivery changes nothing)."""
        with contextlib.suppress(PreconditionFailed):
            self.store.put_bytes(
                f"{GROUND_TRUTH}/{endpoint}/{event_id}.json",
                json.dumps(labels).encode(),
                content_type=_JSON,
                if_none_match=True,
            )

    async def on_ground_truth(self, envelope: Envelope[GroundTruthRecorded]) -> None:
        data = envelope.data
        await asyncio.to_thread(
            self.record_ground_truth, data.endpoint_name, str(envelope.event_id), data.labels
        )


_JSON = "application/json"
