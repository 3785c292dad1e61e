"""The credit-risk demo: every step of the golden path through the public APIs, timed and shown.

Data -> ingest (datasets) -> trainer (XGBoost job) -> registry (version, approval) -> deployer
(endpoint) -> gateway (access key, CSV / JSON / v2 / explanation requests). The bus's events for
the demo's aggregates are collected in the background and printed under the step that caused them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cairn.errors import InvalidInput, NotFound
from cairn.settings import CairnSettings
from cairn_sdk import Client
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cairn_cli.demo.data import LABEL, CreditData, csv_row, write_credit_data
from cairn_cli.sdk_common import format_metrics, table, wait_for_job

GROUP = "credit-risk"
ENDPOINT = "credit-risk"
VARIANT = "AllTraffic"
TRAIL_TYPES = [
    "DatasetIngested",
    "TrainingJobRequested",
    "TrainingJobStarted",
    "TrainingJobProgressed",
    "TrainingJobCompleted",
    "TrainingJobFailed",
    "ModelPackageRegistered",
    "ModelApprovalChanged",
    "DeploymentRequested",
    "EndpointUpdated",
]
MODEL_WAIT_S = 30.0


@dataclass
class DemoOptions:
    rows: int = 30_000
    num_round: int = 60
    seed: int = 7
    work_dir: Path = Path(".cairn/demo")
    kafka_bootstrap_servers: str | None = None


@dataclass
class EventTrail:
    """Events of the demo's aggregates, read from the bus in a background thread."""

    settings: CairnSettings | None
    keys: set[str]
    since: datetime
    events: list[dict[str, Any]] = field(default_factory=list)
    shown: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[None] | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if self.settings is None:
            return
        self._thread = threading.Thread(target=self._run, name="cairn-demo-trail", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._task = loop.create_task(self._collect())
        with contextlib.suppress(BaseException):
            loop.run_until_complete(self._task)
        loop.close()

    async def _collect(self) -> None:
        from cairn.bus.client import tail_events

        assert self.settings is not None
        async for _topic, _partition, _offset, key, event, error in tail_events(
            self.settings, TRAIL_TYPES, from_beginning=True
        ):
            if error is not None or isinstance(event, dict):
                continue
            if event.occurred_at < self.since or key not in self.keys:
                continue
            with self._lock:
                self.events.append(
                    {
                        "type": event.type,
                        "key": key,
                        "source": event.source,
                        "correlation_id": str(event.correlation_id),
                        "occurred_at": event.occurred_at,
                        "data": event.data.model_dump(mode="json"),
                    }
                )

    def new_events(self, settle_s: float = 0.3) -> list[dict[str, Any]]:
        """The events that arrived since the last call (after a short wait for stragglers)."""
        if self._thread is None:
            return []
        time.sleep(settle_s)
        with self._lock:
            fresh = self.events[self.shown :]
            self.shown = len(self.events)
        return sorted(fresh, key=lambda event: event["occurred_at"])

    def stop(self) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class StepTiming:
    name: str
    seconds: float


class CreditRiskDemo:
    """Runs the flow against a Client; prints to `console`; returns a summary document."""

    def __init__(
        self, client: Client, console: Console, options: DemoOptions, trail: EventTrail
    ) -> None:
        self.client = client
        self.console = console
        self.options = options
        self.trail = trail
        self.timings: list[StepTiming] = []
        self.step_number = 0

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.step_number += 1
        self.console.rule(f"[bold]{self.step_number}. {escape(title)}", align="left")
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        self.timings.append(StepTiming(title, elapsed))
        self._print_events()
        self.console.print(f"[dim]   {elapsed:.2f} s[/]")

    def _print_events(self) -> None:
        events = self.trail.new_events()
        progressed = [e for e in events if e["type"] == "TrainingJobProgressed"]
        for event in events:
            if event["type"] == "TrainingJobProgressed" and event is not progressed[-1]:
                continue
            data = event["data"]
            detail = {k: v for k, v in data.items() if not isinstance(v, list | dict)}
            if event["type"] == "TrainingJobProgressed":
                detail = {"iteration": data["iteration"], "progress events": len(progressed)}
            text = ", ".join(f"{k}={v}" for k, v in list(detail.items())[:5])
            self.console.print(
                f"   [cyan]event[/] {event['type']:<24} [dim]{event['source']:<9} "
                f"corr={event['correlation_id'][:8]}[/] {escape(text)}",
                highlight=False,
                soft_wrap=True,
            )

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        options = self.options
        job_name = f"credit-risk-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        self.trail.keys.update(
            {job_name, GROUP, ENDPOINT, "credit-risk-train", "credit-risk-validation"}
        )

        with self.step(f"Generate a synthetic credit dataset ({options.rows:,} rows)"):
            data = write_credit_data(options.work_dir, options.rows, seed=options.seed)
            share = data.train[LABEL].mean()
            self.console.print(
                f"   {len(data.train):,} train + {len(data.validation):,} validation rows, "
                f"{len(data.feature_columns)} features, default rate {share:.1%} -> "
                f"{data.train_path.parent}"
            )

        with self.step("Store it: upload both files through the ingest service"):
            uris = {}
            for channel, path in (("train", data.train_path), ("validation", data.validation_path)):
                dataset = self.client.upload_dataset(path, f"credit-risk-{channel}")
                uris[channel] = dataset["uri"]
                self.console.print(
                    f"   {channel:<10} {dataset['uri']}  {dataset['row_count']:,} rows  "
                    f"sha256 {dataset['sha256'][:12]}"
                )

        with self.step(f"Train XGBoost: job {job_name}"):
            self.client.create_training_job(
                job_name,
                "xgboost",
                uris,
                hyperparameters={
                    "objective": "binary:logistic",
                    "num_round": options.num_round,
                    "max_depth": 4,
                    "eta": 0.2,
                    "eval_metric": "auc,logloss",
                    "early_stopping_rounds": 10,
                    "progress_every": 5,
                },
                label_column=LABEL,
                register_group=GROUP,
            )
            job = wait_for_job(self.client, job_name, self.console, poll_s=0.3)
            if job["status"] != "Completed":
                raise InvalidInput(f"training job {job_name} failed: {job.get('failure_reason')}")
            self.console.print(
                f"   {job['device']}, {job['training_time_s']:.2f} s training, "
                f"{format_metrics(job['metrics'], limit=6)}"
            )

        with self.step(f"Registered into model package group {GROUP}"):
            version = self.client.wait_for_model_package(job_name, GROUP, timeout_s=MODEL_WAIT_S)
            self.console.print(self._version_table(version))

        with self.step(f"Approve version {version['version']}"):
            version = self.client.approve(
                GROUP, version["version"], reason="AUC checked by the demo"
            )
            self.console.print(f"   approval: [bold]{version['approval_status']}[/]")

        with self.step(f"Deploy to endpoint {ENDPOINT} (all at once)"):
            endpoint = self._deploy(version["version"])
            self.console.print(
                f"   revision {endpoint['revision']} {endpoint['status']}, variant {VARIANT} "
                f"-> {GROUP}:{version['version']}, served by the gateway"
            )

        with self.step(f"Create a key that may only invoke {ENDPOINT}"):
            key = self.client.create_key(
                "cairn-demo", scopes=["invoke"], endpoints=[ENDPOINT], description="cairn demo"
            )
            self.client.use_access_key(key)
            self.console.print(f"   {key['key_id']} (secret shown once: in the curl below)")

        with self.step("Invoke the endpoint over HTTP"):
            answers = self._invoke(data)

        curl = self._curl(data, key["token"])
        total = time.perf_counter() - started
        self._finish(curl, total)
        return {
            "job_name": job_name,
            "model_package_group": GROUP,
            "model_version": version["version"],
            "artifact_uri": version["artifact_uri"],
            "endpoint_name": ENDPOINT,
            "gateway_url": self.client.url("gateway"),
            "bearer_token": key["token"],
            "curl": curl,
            "datasets": uris,
            "validation_csv": str(data.validation_path),
            "feature_columns": data.feature_columns,
            "answers": answers,
            "timings_s": {timing.name: round(timing.seconds, 3) for timing in self.timings},
            "total_s": round(total, 3),
        }

    def _version_table(self, version: dict[str, Any]) -> Table:
        lineage = version.get("lineage") or {}
        datasets = ", ".join(ref["uri"] for ref in lineage.get("datasets", []))
        rows = [
            ("version", version["version"]),
            ("approval", version["approval_status"]),
            ("artifact", version["artifact_uri"]),
            ("framework", f"{version.get('framework')} {version.get('framework_version')}"),
            ("metrics", format_metrics(version.get("metrics") or {}, limit=6)),
            ("lineage", f"{datasets} -> job {lineage.get('training_job')}"),
        ]
        return table("", ("", ""), rows)

    def _deploy(self, model_version: int) -> dict[str, Any]:
        variant = {
            "variant_name": VARIANT,
            "model_package_group": GROUP,
            "model_version": model_version,
            "initial_weight": 1.0,
        }
        rollout = {"mode": "all_at_once"}
        deadline = time.monotonic() + MODEL_WAIT_S
        while True:
            try:
                try:
                    self.client.describe_endpoint(ENDPOINT)
                except NotFound:
                    self.client.create_endpoint(ENDPOINT, [variant], rollout=rollout)
                else:  # a previous demo's endpoint: move it to the new version
                    self.client.update_endpoint(ENDPOINT, [variant], rollout=rollout)
                break
            except InvalidInput as error:
                # The deployer learns of new versions from the registry's event, a moment later.
                if error.code != "model_version_unknown" or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
        return self.client.wait_for_endpoint(ENDPOINT, timeout_s=60)

    def _invoke(self, data: CreditData) -> dict[str, Any]:
        columns = data.feature_columns
        frame = data.validation
        sample = list(range(5))
        csv_body = "\n".join(csv_row(frame, index, columns) for index in sample)
        csv_answer = self.client.invoke(ENDPOINT, csv_body, "text/csv")
        records = [
            {column: _plain(frame.at[index, column]) for column in columns} for index in sample
        ]
        json_answer = self.client.invoke(ENDPOINT, {"instances": records}, "application/json")
        rows = [[_plain(frame.at[index, column]) for column in columns] for index in sample]
        v2_answer = self.client.invoke_v2(ENDPOINT, rows, request_id="cairn-demo")
        explained = self.client.invoke(
            ENDPOINT, csv_row(frame, 0, columns), "text/csv", explain=True
        )

        grid = Table(title="Predictions (probability of default)", title_justify="left")
        for column in ("row", "CSV", "JSON", "v2", "actual default"):
            grid.add_column(column, justify="right")
        for position, index in enumerate(sample):
            grid.add_row(
                str(index),
                f"{csv_answer.predictions[position]:.4f}",
                f"{json_answer.predictions[position]:.4f}",
                f"{v2_answer.predictions[position]:.4f}",
                str(frame.at[index, LABEL]),
            )
        self.console.print(grid)
        self.console.print(
            f"   variant {csv_answer.variant}; latency CSV {csv_answer.latency_ms:.1f} ms, "
            f"JSON {json_answer.latency_ms:.1f} ms, v2 {v2_answer.latency_ms:.1f} ms"
        )
        explanation = explained.body["explanations"][0]
        contributions = explanation["feature_contributions"]
        top = sorted(contributions.items(), key=lambda item: abs(item[1]), reverse=True)[:5]
        probability = explained.predictions[0]
        lines = Table(
            title=f"Why row 0 scores {probability:.4f}: top contributions (log-odds, TreeSHAP)",
            title_justify="left",
        )
        for column in ("feature", "value", "contribution"):
            lines.add_column(column, justify="right" if column != "feature" else "left")
        for name, value in top:
            lines.add_row(name, str(frame.at[0, name]), f"{value:+.4f}")
        lines.add_row("(bias)", "", f"{explanation['bias']:+.4f}")
        self.console.print(lines)
        return {
            "rows": sample,
            "csv": csv_answer.predictions,
            "json": json_answer.predictions,
            "v2": v2_answer.predictions,
            "explanation": explanation,
        }

    def _curl(self, data: CreditData, token: str) -> str:
        body = csv_row(data.validation, 0, data.feature_columns)
        url = f"{self.client.url('gateway')}/endpoints/{ENDPOINT}/invocations"
        parts = [
            "curl", "-sS", "-X", "POST", url,
            "-H", f"Authorization: Bearer {token}",
            "-H", "Content-Type: text/csv",
            "--data", body,
        ]  # fmt: skip
        return shlex.join(parts)

    def _finish(self, curl: str, total: float) -> None:
        self.console.rule("[bold green]Done", align="left")
        summary = Table(title=f"Steps ({total:.1f} s in all)", title_justify="left")
        summary.add_column("step")
        summary.add_column("seconds", justify="right")
        for timing in self.timings:
            summary.add_row(timing.name, f"{timing.seconds:.2f}")
        self.console.print(summary)
        self.console.print("The endpoint keeps serving. Call it yourself:\n")
        self.console.print(curl, highlight=False, soft_wrap=True, markup=False)


def _plain(value: Any) -> Any:
    """A numpy scalar as the JSON value it stands for."""
    item: Callable[[], Any] | None = getattr(value, "item", None)
    return item() if item is not None else value


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))


def trail_since() -> datetime:
    """Events from a little before now (clock skew between processes is small here)."""
    return datetime.now(UTC) - timedelta(seconds=2)
