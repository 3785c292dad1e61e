"""`cairn demo --drift`: the closed loop, live: drift -> retrain -> evaluate -> canary -> promoted.

The credit endpoint gets a monitoring schedule and a retrain policy; traffic (with an inference id
per request, and its ground truth published as GroundTruthRecorded a moment later) shifts part-way
to the data of `drift_data`. The flow only watches from then on: every step after the shift is
taken by the services on their own, through events, and printed as it happens with its time
since the drift began.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
from cairn.bus.publish import Signer
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import GroundTruthRecorded
from cairn.errors import Unavailable
from cairn.settings import CairnSettings
from cairn_sdk import Client
from cairn_sdk.credentials import bearer_headers
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cairn_cli.credential import user_signer
from cairn_cli.demo.data import LABEL, generate_credit_frame
from cairn_cli.demo.drift_data import generate_shifted_frame
from cairn_cli.demo.flow import ENDPOINT, GROUP, StepTiming

CHAIN_TYPES = [
    "DriftDetected",
    "RetrainRequested",
    "TrainingJobRequested",
    "TrainingJobStarted",
    "TrainingJobCompleted",
    "TrainingJobFailed",
    "ModelPackageRegistered",
    "ChallengerEvaluated",
    "ModelApprovalRequested",
    "ModelApprovalChanged",
    "DeploymentRequested",
    "EndpointUpdated",
    "DeploymentRolledBack",
]
WATCHED_TYPES = ["MonitoringRunCompleted", *CHAIN_TYPES]
HTTP_TIMEOUT_S = 30.0


@dataclass
class DriftOptions:
    """Knobs of the drift demo; the defaults close the loop in well under two minutes."""

    interval_s: float = 5.0
    min_rows: int = 200
    p_value: float = 0.01
    pre_drift_s: float = 6.0
    batch_rows: int = 20
    requests_per_s: float = 25.0
    min_new_labelled_rows: int = 5000
    cooldown_s: float = 60.0
    margin: float = 0.02
    canary_percent: float = 20.0
    bake_time_s: float = 10.0
    timeout_s: float = 180.0
    seed: int = 11


@dataclass
class Traffic:
    """Sends batches to the endpoint from a thread; publishes their ground truth every second."""

    gateway_url: str
    token: str
    bus: CairnSettings
    options: DriftOptions
    feature_columns: list[str]
    signer: Signer | None = None  # the user's credential: it signs the ground-truth events
    drift_onset: datetime | None = None
    sent_rows: int = 0
    labelled_rows: int = 0
    errors: int = 0
    last_error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _shift: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cairn-drift-traffic", daemon=True)
        self._thread.start()

    def shift(self) -> datetime:
        """From now on send shifted data; returns the drift onset."""
        self.drift_onset = datetime.now(UTC)
        self._shift.set()
        return self.drift_onset

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run(self._send())

    async def _send(self) -> None:
        from cairn.bus.client import EventProducer

        rows = 200_000
        before = generate_credit_frame(rows, seed=self.options.seed)
        after = generate_shifted_frame(rows, seed=self.options.seed + 1)
        pending: dict[str, int] = {}
        last_labels = time.monotonic()
        run = uuid.uuid4().hex[:8]
        period_s = 1.0 / self.options.requests_per_s
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "text/csv"}
        url = f"{self.gateway_url}/endpoints/{ENDPOINT}/invocations"
        async with (
            EventProducer(self.bus, source="cairn-demo", signer=self.signer) as producer,
            httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, trust_env=False) as http,
        ):
            position = 0
            while not self._stop.is_set():
                started = time.monotonic()
                frame = after if self._shift.is_set() else before
                batch = frame.iloc[position : position + self.options.batch_rows]
                position = (position + self.options.batch_rows) % (rows - self.options.batch_rows)
                inference_id = f"drift-demo-{run}-{position}"
                body = "\n".join(_csv_lines(batch, self.feature_columns))
                headers["X-Amzn-SageMaker-Inference-Id"] = inference_id
                try:
                    response = await http.post(url, content=body, headers=headers)
                    if response.status_code == 200:
                        self.sent_rows += len(batch)
                        for index, label in enumerate(batch[LABEL]):
                            pending[f"{inference_id}:{index}"] = int(label)
                    else:
                        self.errors += 1
                        self.last_error = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as error:
                    self.errors += 1
                    self.last_error = repr(error)
                if pending and time.monotonic() - last_labels >= 1.0:
                    # Ground truth arrives a little after the predictions, as it would.
                    labels: dict[str, float | int | str] = dict(pending)
                    await producer.publish(
                        GroundTruthRecorded(endpoint_name=ENDPOINT, labels=labels)
                    )
                    self.labelled_rows += len(pending)
                    pending.clear()
                    last_labels = time.monotonic()
                await asyncio.sleep(max(0.0, period_s - (time.monotonic() - started)))


def _csv_lines(batch: pd.DataFrame, columns: list[str]) -> list[str]:
    return [",".join(str(cell) for cell in row) for row in batch[columns].itertuples(index=False)]


@dataclass
class LoopResult:
    """What the watcher saw: the chain's events, its correlation, and how it ended."""

    correlation_id: str | None = None
    events: list[Envelope[Any]] = field(default_factory=list)
    drifts: list[Envelope[Any]] = field(default_factory=list)
    challenger_version: int | None = None
    outcome: str = "timeout"
    promoted_at: datetime | None = None


class DriftDemo:
    """Sets up monitoring and retraining on the credit endpoint, shifts traffic, watches."""

    def __init__(
        self,
        client: Client,
        console: Console,
        monitor_url: str,
        bus: CairnSettings,
        options: DriftOptions | None = None,
    ) -> None:
        self.client = client
        self.console = console
        self.monitor_url = monitor_url.rstrip("/")
        self.bus = bus
        self.options = options or DriftOptions()
        self.headers = bearer_headers(client.api_key)
        self.timings: list[StepTiming] = []

    def _monitor(self, method: str, path: str, body: dict[str, Any]) -> Any:
        response = httpx.request(
            method,
            f"{self.monitor_url}{path}",
            json=body,
            headers=self.headers,
            timeout=HTTP_TIMEOUT_S,
            trust_env=False,
        )
        if response.status_code >= 400:
            raise Unavailable(f"monitor {method} {path}: {response.status_code} {response.text}")
        return response.json()

    def run(self) -> dict[str, Any]:
        options = self.options
        endpoint = self.client.describe_endpoint(ENDPOINT)
        served = max(endpoint["production_variants"], key=lambda v: float(v["weight"]))
        champion = int(served["model_version"])
        self.console.rule("[bold]1. The credit endpoint and what watches it", align="left")
        self.console.print(
            f"   {ENDPOINT} serves {GROUP}:{champion} (variant {served['variant_name']})",
            highlight=False,
        )
        self._monitor(
            "POST",
            f"/schedules/{ENDPOINT}",
            {
                "interval_s": options.interval_s,
                "min_rows": options.min_rows,
                "drift_p_value": options.p_value,
                "correction": "bonferroni",
            },
        )
        rollout = {
            "mode": "canary",
            "canary_percent": options.canary_percent,
            "bake_time_s": options.bake_time_s,
            "max_error_rate": 0.05,
            "max_p99_latency_ms": 2000.0,
        }
        self._monitor(
            "PUT",
            f"/retrain-policies/{GROUP}",
            {
                "endpoint_name": ENDPOINT,
                "cooldown_s": options.cooldown_s,
                "min_new_labelled_rows": options.min_new_labelled_rows,
                "data": "original+captured",
                "metric": "auc",
                "margin": options.margin,
                "rollout": rollout,
            },
        )
        self.console.print(
            f"   schedule: every {options.interval_s:g} s, >= {options.min_rows} rows, "
            f"p < {options.p_value} (Bonferroni)\n"
            f"   retrain policy: cooldown {options.cooldown_s:g} s, >= "
            f"{options.min_new_labelled_rows} new labelled rows, original+captured data, "
            f"AUC margin {options.margin}\n"
            f"   rollout: canary {options.canary_percent:g}% for {options.bake_time_s:g} s, "
            "rolled back if errors > 5% or p99 > 2 s",
            highlight=False,
        )
        key = self.client.create_key(
            "cairn-demo", scopes=["invoke"], endpoints=[ENDPOINT], description="cairn demo --drift"
        )
        columns = [name for name in generate_credit_frame(10).columns if name != LABEL]
        signer = user_signer(token=self.client.api_key)
        gateway = self.client.url("gateway")
        traffic = Traffic(gateway, key["token"], self.bus, options, columns, signer)
        watch_from = datetime.now(UTC) - timedelta(seconds=1)
        self.console.rule("[bold]2. Live traffic, then the shift", align="left")
        traffic.start()
        try:
            self.console.print(
                f"   {options.requests_per_s:g} requests/s of {options.batch_rows} rows, each with "
                "an X-Amzn-SageMaker-Inference-Id; ground truth follows as GroundTruthRecorded",
                highlight=False,
            )
            time.sleep(options.pre_drift_s)
            onset = traffic.shift()
            self.console.print(
                f"   [bold yellow]drift begins[/] after {traffic.sent_rows:,} rows: incomes x0.45, "
                "contract/self-employed and education loans now drive defaults",
                highlight=False,
            )
            self.console.rule("[bold]3. The loop closes by itself (events, live)", align="left")
            result = asyncio.run(self._watch(watch_from, onset, traffic))
        finally:
            traffic.stop()
        return self._finish(result, onset, traffic, champion)

    async def _watch(self, since: datetime, onset: datetime, traffic: Traffic) -> LoopResult:
        """Print the loop's events as they come; stop when the challenger serves 100%."""
        from cairn.bus.client import tail_events

        result = LoopResult()
        deadline = time.monotonic() + self.options.timeout_s
        stream = tail_events(self.bus, WATCHED_TYPES, from_beginning=True)
        try:
            while time.monotonic() < deadline:
                try:
                    item = await asyncio.wait_for(
                        anext(stream), timeout=max(0.1, deadline - time.monotonic())
                    )
                except TimeoutError:
                    break
                event = item.event
                if item.error is not None or isinstance(event, dict):
                    continue
                if event.occurred_at < since or not self._relevant(event, result):
                    continue
                self._show(event, onset)
                if self._closes(event, result):
                    break
        finally:
            closing = getattr(stream, "aclose", None)  # an async generator: stop its consumer
            if closing is not None:
                await closing()
        if result.outcome == "timeout":
            self.console.print(
                f"[red]   the loop did not close in {self.options.timeout_s:.0f} s[/] "
                f"(traffic: {traffic.sent_rows:,} rows sent, {traffic.errors} errors"
                f"{'; last: ' + escape(traffic.last_error) if traffic.last_error else ''})",
                highlight=False,
            )
        return result

    def _relevant(self, event: Envelope[Any], result: LoopResult) -> bool:
        """Monitoring runs and drifts of our endpoint, then everything of the retrain's chain."""
        data = event.data
        if event.type in ("MonitoringRunCompleted", "DriftDetected"):
            if data.endpoint_name != ENDPOINT:
                return False
            if event.type == "DriftDetected":
                result.drifts.append(event)
            return True
        if event.type == "RetrainRequested" and result.correlation_id is None:
            if data.endpoint_name != ENDPOINT:
                return False
            result.correlation_id = event.correlation_id
            # The drift run that caused it shares its correlation.
            result.events += [d for d in result.drifts if d.correlation_id == event.correlation_id]
        if event.correlation_id != result.correlation_id:
            return False
        result.events.append(event)
        return True

    def _closes(self, event: Envelope[Any], result: LoopResult) -> bool:
        data = event.data
        if event.type == "ChallengerEvaluated":
            result.challenger_version = data.challenger_version
            if not data.promoted:
                result.outcome = "kept the champion"
                return True
        if event.type == "DeploymentRolledBack":
            result.outcome = "rolled back"
            return True
        if event.type == "EndpointUpdated" and result.challenger_version is not None:
            variants = data.production_variants
            if (
                data.status == "InService"
                and len(variants) == 1
                and variants[0].model_version == result.challenger_version
                and variants[0].weight == 1.0
            ):
                result.outcome = "promoted"
                result.promoted_at = event.occurred_at
                return True
        return False

    def _show(self, event: Envelope[Any], onset: datetime) -> None:
        elapsed = (event.occurred_at - onset).total_seconds()
        text = escape(_describe(event))
        style = "bold" if event.type in ("DriftDetected", "ChallengerEvaluated") else ""
        self.console.print(
            f"   [dim]{elapsed:+7.1f} s[/] [cyan]{event.type:<24}[/] "
            f"[dim]{event.source:<9} corr={event.correlation_id[:24]}[/] "
            f"[{style or 'default'}]{text}[/]",
            highlight=False,
            soft_wrap=True,
        )

    def _finish(
        self, result: LoopResult, onset: datetime, traffic: Traffic, champion: int
    ) -> dict[str, Any]:
        def at(event_type: str) -> float | None:
            found = [e for e in result.events if e.type == event_type]
            return (found[0].occurred_at - onset).total_seconds() if found else None

        milestones = {
            "drift detected": at("DriftDetected"),
            "retrain requested": at("RetrainRequested"),
            "training completed": at("TrainingJobCompleted"),
            "challenger evaluated": at("ChallengerEvaluated"),
            "canary started": at("DeploymentRequested"),
            "serving 100%": (
                (result.promoted_at - onset).total_seconds() if result.promoted_at else None
            ),
        }
        loop_s = milestones["serving 100%"]
        self.console.rule(
            "[bold green]Loop closed" if result.outcome == "promoted" else "[bold red]Loop open",
            align="left",
        )
        grid = Table(title="From drift onset", title_justify="left")
        grid.add_column("milestone")
        grid.add_column("seconds", justify="right")
        for name, seconds in milestones.items():
            grid.add_row(name, "-" if seconds is None else f"{seconds:.1f}")
        self.console.print(grid)
        if loop_s is not None:
            self.console.print(
                f"   [bold]drift onset -> {GROUP}:{result.challenger_version} serving 100%: "
                f"{loop_s:.1f} s[/] (training included; correlation {result.correlation_id})",
                highlight=False,
            )
        else:
            self.console.print(f"   outcome: {result.outcome}", highlight=False)
        self.console.print(
            f"   traffic: {traffic.sent_rows:,} rows sent, {traffic.labelled_rows:,} labelled, "
            f"{traffic.errors} errors; follow it again with `cairn trace {result.correlation_id}`",
            highlight=False,
        )
        return {
            "outcome": result.outcome,
            "endpoint_name": ENDPOINT,
            "model_package_group": GROUP,
            "champion_version": champion,
            "challenger_version": result.challenger_version,
            "correlation_id": result.correlation_id,
            "drift_onset": onset.isoformat(),
            "milestones_s": {
                name: None if value is None else round(value, 3)
                for name, value in milestones.items()
            },
            "loop_s": None if loop_s is None else round(loop_s, 3),
            "chain": [
                {
                    "type": e.type,
                    "source": e.source,
                    "event_id": str(e.event_id),
                    "correlation_id": e.correlation_id,
                    "occurred_at": e.occurred_at.isoformat(),
                }
                for e in result.events
            ],
            "traffic": {
                "rows_sent": traffic.sent_rows,
                "rows_labelled": traffic.labelled_rows,
                "errors": traffic.errors,
            },
        }


def _describe(event: Envelope[Any]) -> str:
    """One line on what an event of the loop says."""
    data = event.data
    match event.type:
        case "MonitoringRunCompleted":
            drifted = ", ".join(data.drifted_features) or "no drift"
            return f"run {data.run_id}: {data.rows_checked} rows, {drifted}"
        case "DriftDetected":
            top = sorted(data.features, key=lambda f: f.p_value)[:4]
            features = ", ".join(f"{f.feature} ({f.test} p={f.p_value:.1e})" for f in top)
            more = len(data.features) - len(top)
            return f"{GROUP}:{data.model_version}: {features}{f' +{more} more' if more else ''}"
        case "RetrainRequested":
            return f"{data.new_training_job} (from {data.base_training_job})"
        case "TrainingJobRequested" | "TrainingJobStarted":
            return str(data.job_name)
        case "TrainingJobCompleted":
            auc = data.metrics.get("validation:auc")
            scores = f", validation auc {auc:.3f}" if auc is not None else ""
            return f"{data.job_name}: {data.training_time_s:.1f} s training{scores}"
        case "TrainingJobFailed":
            return f"{data.job_name}: {data.reason}"
        case "ModelPackageRegistered":
            return f"{data.model_package_group}:{data.version} {data.approval_status}"
        case "ChallengerEvaluated":
            verdict = "promote" if data.promoted else "keep the champion"
            champion = "-" if data.champion_score is None else f"{data.champion_score:.3f}"
            return (
                f"v{data.challenger_version} {data.metric} {data.challenger_score:.3f} vs "
                f"v{data.champion_version} {champion} (margin {data.margin}): {verdict}"
            )
        case "ModelApprovalRequested" | "ModelApprovalChanged":
            return f"{data.model_package_group}:{data.version} -> {data.approval_status}"
        case "DeploymentRequested":
            versions = ", ".join(
                f"{v.variant_name}={v.model_package_group}:{v.model_version}"
                for v in data.production_variants
            )
            return f"{data.action} {versions}, {data.rollout.mode} {data.rollout.canary_percent:g}%"
        case "EndpointUpdated":
            weights = ", ".join(
                f"{v.variant_name}={v.model_package_group}:{v.model_version}@{v.weight:.2f}"
                for v in data.production_variants
            )
            return f"rev {data.revision} {data.status}: {weights}"
        case "DeploymentRolledBack":
            return f"{data.rolled_back_variant}: {data.reason}"
    return ""
