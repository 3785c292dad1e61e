"""The monitor's service layer: baselines, schedules, runs, ground truth (retraining elsewhere)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cairn.auth import Principal
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
from cairn.errors import CairnError, PreconditionFailed
from cairn.ports import Authority, Publish
from cairn.store.base import ObjectStore

from services.monitor.baseline import Statistics
from services.monitor.baseline_store import Baselines
from services.monitor.capture import CapturedRow
from services.monitor.config import MonitorSettings
from services.monitor.domain import (
    RUNS,
    SCHEDULES,
    PendingRun,
    RunNotFound,
    RunSummary,
    Schedule,
    ScheduleNotFound,
    changed_schedule,
    finished,
    is_due,
    next_window,
    postponed,
)
from services.monitor.runs import RunExecutor, RunReport, utc_now
from services.monitor.storage import captured_rows, readable
from services.monitor.views import ServedModel, served_model

log = logging.getLogger("cairn.monitor")


SELF = "service:monitor"  # the principal of changes the monitor decides on its own


Claim = tuple[Schedule, PendingRun, ServedModel, list[CapturedRow]]


class Monitor:
    """Baselines once per model version; runs per schedule window, each completed exactly once."""

    def __init__(
        self,
        store: ObjectStore,
        publish: Publish,
        config: MonitorSettings,
        authority: Authority | None = None,
    ) -> None:
        self.store = store
        self.publish = publish
        self.config = config
        self.authority = authority
        self.schedules: DocumentStore[Schedule] = DocumentStore(store, Schedule, SCHEDULES)
        self.runs: DocumentStore[RunSummary] = DocumentStore(store, RunSummary, RUNS)
        self.baselines = Baselines(store, config.sketch_size, config.reference_max_values)
        self.executor = RunExecutor(store, self.baselines, self.runs, config)
        self._captured_rows: dict[str, int] = defaultdict(int)
        self._running: set[str] = set()

    # Events ------------------------------------------------------------------------------------

    async def on_endpoint_updated(self, envelope: Envelope[EndpointUpdated]) -> None:
        """Baseline every model an endpoint now serves (once per version), then announce it.

        A baseline stored but not yet announced (the monitor died in between, or a run stored
        it) is announced by the next delivery: a redelivery of this event or a later update.
        """
        for variant in envelope.data.production_variants:
            baseline, _ = await asyncio.to_thread(
                self.baselines.ensure,
                variant.model_package_group,
                variant.model_version,
                variant.artifact_uri,
            )
            if await asyncio.to_thread(self.baselines.announced, baseline.group, baseline.version):
                continue
            computed = BaselineComputed(
                model_package_group=baseline.group,
                model_version=baseline.version,
                statistics_uri=baseline.statistics_key,
                constraints_uri=baseline.constraints_key,
                row_count=baseline.statistics.item_count,
            )
            sent = await self.publish(computed, cause=envelope)
            await asyncio.to_thread(
                self.baselines.mark_announced, baseline.group, baseline.version, str(sent.event_id)
            )

    async def on_schedule_requested(self, envelope: Envelope[MonitoringScheduleRequested]) -> None:
        """The event form of the schedule API (the kernel verified the signer's `deploy` scope)."""
        request = envelope.data
        principal = await self.requester(envelope)
        await asyncio.to_thread(self.apply_schedule, request)
        await self.audit(
            f"monitoring_schedule.{request.action}",
            f"/schedules/{request.endpoint_name}",
            principal,
            envelope.correlation_id,
        )

    async def requester(self, envelope: Envelope[Any]) -> Principal | str:
        """Who signed a request event (`unverified:<source>` when authentication is off)."""
        if self.authority is None:
            return f"unverified:{envelope.source}"
        try:
            return await self.authority.principal_of(envelope)
        except CairnError:  # authentication is off and the request is unsigned
            return f"unverified:{envelope.source}"

    async def audit(
        self,
        action: str,
        resource: str,
        principal: Principal | str,
        correlation_id: str | None,
        **details: Any,
    ) -> None:
        """Record a change made from an event (routes are audited by the kernel)."""
        if self.authority is not None:
            await self.authority.audit(
                action=action,
                resource=resource,
                principal=principal,
                correlation_id=correlation_id,
                details=details or None,
            )

    async def on_inference_captured(self, envelope: Envelope[InferenceCaptured]) -> None:
        """Count captured rows; enough of them make the next tick run the endpoint early."""
        self._captured_rows[envelope.data.endpoint_name] += envelope.data.record_count

    async def on_ground_truth(self, envelope: Envelope[GroundTruthRecorded]) -> None:
        data = envelope.data
        await asyncio.to_thread(
            self.executor.record_labels, data.endpoint_name, str(envelope.event_id), data.labels
        )

    # Schedules and queries ---------------------------------------------------------------------

    def apply_schedule(self, request: MonitoringScheduleRequested) -> Schedule | None:
        """Create, update or delete an endpoint's schedule; keeps the watermark on update."""
        key = f"{request.endpoint_name}.json"
        if request.action == "delete":
            self.schedules.delete(key)
            return None
        now = utc_now()
        return self.schedules.update(
            key, lambda current: changed_schedule(current, request, now)
        ).doc

    def get_schedule(self, endpoint: str) -> Schedule:
        found = self.schedules.get_or_none(f"{endpoint}.json")
        if found is None:
            raise ScheduleNotFound(f"no monitoring schedule for endpoint {endpoint!r}")
        return found.doc

    def list_schedules(self) -> list[Schedule]:
        return readable(self.schedules)

    def list_runs(self, endpoint: str) -> list[RunSummary]:
        return readable(self.runs, f"{endpoint}/")

    def report(self, endpoint: str, run_id: str) -> RunReport:
        found = self.executor.reports.get_or_none(f"{endpoint}/{run_id}/report.json")
        if found is None:
            raise RunNotFound(f"no monitoring run {run_id!r} for endpoint {endpoint!r}")
        return found.doc

    def statistics(self, group: str, version: int) -> Statistics:
        return self.baselines.statistics(group, version)

    def load_labels(self, endpoint: str) -> dict[str, float | int | str]:
        return self.executor.load_labels(endpoint)

    def captured_rows(
        self, endpoint: str, variant: str | None, start: datetime | None, end: datetime
    ) -> list[CapturedRow]:
        return captured_rows(self.store, endpoint, variant, start, end)

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
        """The schedule loop (the service starts and cancels it); survives errors."""
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
            self._captured_rows[endpoint] = 0
            report = await asyncio.to_thread(self.executor.execute, *claimed)
            await self._announce(report)
            pending = claimed[1]
            await asyncio.to_thread(
                self._update, endpoint, lambda s: finished(s, pending.run_id, now)
            )
            return report.summary
        finally:
            self._running.discard(endpoint)

    def _claim(self, endpoint: str, now: datetime) -> Claim | None:
        """Claim the next window when the endpoint serves a model and has enough rows for it."""
        schedule = self.get_schedule(endpoint)
        served = served_model(self.store, endpoint)
        pending = next_window(schedule, self.config.instance_id, now, self.config.run_lease_s)
        if served is None or pending is None:
            if served is None:
                self._update(endpoint, lambda current: postponed(current, now))
            return None
        rows = self.captured_rows(
            endpoint, served.variant_name, pending.window_start, pending.window_end
        )
        if schedule.pending_run is None and len(rows) < schedule.min_rows:
            self._update(endpoint, lambda current: postponed(current, now))
            return None
        expected = schedule.pending_run

        def claim(current: Schedule) -> Schedule:
            if current.pending_run != expected:
                raise PreconditionFailed(f"schedule of {endpoint} changed while claiming")
            return current.model_copy(update={"pending_run": pending})

        try:
            claimed = self._update(endpoint, claim)
        except PreconditionFailed:
            return None
        return None if claimed is None else (claimed, pending, served, rows)

    def _update(self, endpoint: str, change: Callable[[Schedule], Schedule]) -> Schedule | None:
        """Change an existing schedule; None when it was deleted meanwhile."""

        def existing(current: Schedule | None) -> Schedule:
            if current is None:
                raise ScheduleNotFound(f"no monitoring schedule for endpoint {endpoint!r}")
            return change(current)

        try:
            return self.schedules.update(f"{endpoint}.json", existing).doc
        except ScheduleNotFound:
            return None

    async def _announce(self, report: RunReport) -> None:
        """MonitoringRunCompleted, and DriftDetected when anything drifted or was violated."""
        summary = report.summary
        correlation = f"monitor-{summary.endpoint_name}-{summary.run_id}"
        completed = MonitoringRunCompleted(
            endpoint_name=summary.endpoint_name,
            run_id=summary.run_id,
            model_package_group=summary.model_package_group,
            model_version=summary.model_version,
            rows_checked=summary.rows_checked,
            report_uri=summary.report_uri,
            violations=summary.violations,
            drifted_features=summary.drifted_features,
            quality_metrics=summary.quality_metrics,
        )
        await self.publish(completed, correlation_id=correlation)
        if summary.drifted_features or summary.violations:
            await self.publish(drift_of(report), correlation_id=correlation)


def drift_of(report: RunReport) -> DriftDetected:
    """The DriftDetected a run's report announces."""
    summary = report.summary
    return DriftDetected(
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
            for r in report.features
            if r.drifted
        ],
        violations=summary.violations,
        report_uri=summary.report_uri,
    )
