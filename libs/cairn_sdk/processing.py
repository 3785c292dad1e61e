"""Processing jobs (the trainer's `/processing-jobs` API): create, describe, list, logs, wait.

`processing_request` builds the body of CreateProcessingJob from the CLI's compact forms
(`NAME=SOURCE[:DESTINATION]` inputs, `NAME[=DESTINATION][@DATASET]` outputs).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from cairn.errors import InvalidInput, Unavailable

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

TRAINER: ServiceName = "trainer"
TERMINAL_PROCESSING_STATUSES = frozenset({"Completed", "Failed"})


def parse_input(text: str) -> dict[str, Any]:
    """`raw=data/raw/` or `raw=dataset://credit@2:/opt/ml/processing/input/raw`."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise InvalidInput(f"--input {text!r}: expected NAME=SOURCE[:/opt/ml/processing/...]")
    source, _, destination = rest.partition(":/opt/ml/processing")
    item: dict[str, Any] = {"input_name": name, "source": source}
    if destination:
        item["destination"] = "/opt/ml/processing" + destination
    return item


def parse_output(text: str) -> dict[str, Any]:
    """`train`, `train=outputs/prep/train/`, `train@credit-train` (register as that dataset)."""
    spec, _, dataset = text.partition("@")
    name, _, destination = spec.partition("=")
    if not name:
        raise InvalidInput(f"--output {text!r}: expected NAME[=DESTINATION][@DATASET]")
    item: dict[str, Any] = {"output_name": name}
    if destination:
        item["destination"] = destination
    if dataset:
        item["dataset"] = {"dataset_name": dataset}
    return item


def processing_request(
    job_name: str,
    *,
    entry_point: str | None = None,
    builtin: str | None = None,
    inputs: Sequence[str | Mapping[str, Any]] = (),
    outputs: Sequence[str | Mapping[str, Any]] = (),
    arguments: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    max_runtime_s: int | None = None,
    experiment: str | None = None,
) -> dict[str, Any]:
    """The body of CreateProcessingJob; inputs and outputs in compact or full form."""
    body: dict[str, Any] = {
        "job_name": job_name,
        "entry_point": entry_point,
        "builtin": builtin,
        "inputs": [parse_input(i) if isinstance(i, str) else dict(i) for i in inputs],
        "outputs": [parse_output(o) if isinstance(o, str) else dict(o) for o in outputs],
        "arguments": list(arguments),
        "environment": dict(environment or {}),
        "experiment": experiment,
    }
    if max_runtime_s is not None:
        body["max_runtime_s"] = max_runtime_s
    return body


class ProcessingCalls(ServiceCaller):
    """The trainer's `/processing-jobs` API, as methods for `Client` to inherit."""

    def create_processing_job(self, job_name: str, **options: Any) -> dict[str, Any]:
        """Start a processing job (CreateProcessingJob); options as `processing_request`'s."""
        body = processing_request(job_name, **options)
        return dict(self._json("POST", TRAINER, "/processing-jobs", json=body))

    def describe_processing_job(self, job_name: str) -> dict[str, Any]:
        return dict(self._json("GET", TRAINER, f"/processing-jobs/{job_name}"))

    def list_processing_jobs(self) -> list[dict[str, Any]]:
        return list(self._json("GET", TRAINER, "/processing-jobs")["processing_jobs"])

    def processing_job_logs(self, job_name: str) -> str:
        """The latest attempt's log: the program's stdout and stderr."""
        return self._send("GET", TRAINER, f"/processing-jobs/{job_name}/logs").text

    def wait_for_processing_job(
        self, job_name: str, *, timeout_s: float = 24 * 3600, poll_s: float = 1.0
    ) -> dict[str, Any]:
        """Poll until the job completes or fails (through trainer restarts)."""
        deadline = time.monotonic() + timeout_s
        path = f"/processing-jobs/{job_name}"
        while True:
            job = dict(self._json_through_restarts("GET", TRAINER, path))
            if job["status"] in TERMINAL_PROCESSING_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise Unavailable(f"processing job {job_name} still {job['status']}")
            time.sleep(poll_s)
