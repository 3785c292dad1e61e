"""Batch transform jobs: CreateTransformJob, Describe, List, Stop and a waiter."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cairn.errors import Unavailable

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

BATCH: ServiceName = "batch"
TERMINAL = ("Completed", "Failed", "Stopped")


class BatchCalls(ServiceCaller):
    """The batch service's `/transform-jobs` API."""

    def create_transform_job(
        self,
        job_name: str,
        model: str,
        input_uri: str,
        output_uri: str,
        *,
        content_type: str = "text/csv",
        accept: str | None = None,
        split_type: str = "Line",
        compression: str = "None",
        csv_header: bool = False,
        batch_strategy: str = "MultiRecord",
        max_payload_mb: int = 6,
        max_concurrent_transforms: int = 1,
        assemble_with: str = "Line",
        input_filter: str = "$",
        output_filter: str = "$",
        join_source: str = "None",
        max_failed_records: int = 0,
        max_failed_percent: float | None = None,
        explain: bool = False,
        environment: dict[str, str] | None = None,
        shard_size_mb: float | None = None,
    ) -> dict[str, Any]:
        """Start a job (or resume the job of that name); `model` is `GROUP:VERSION`."""
        group, _, version = model.partition(":")
        body = {
            "job_name": job_name,
            "model_package_group": group,
            "model_version": int(version) if version.isdigit() else version,
            "transform_input": {
                "data_source": input_uri,
                "content_type": content_type,
                "split_type": split_type,
                "compression_type": compression,
                "csv_header": csv_header,
            },
            "transform_output": {
                "output_path": output_uri,
                "accept": accept,
                "assemble_with": assemble_with,
            },
            "data_processing": {
                "input_filter": input_filter,
                "output_filter": output_filter,
                "join_source": join_source,
            },
            "batch_strategy": batch_strategy,
            "max_payload_mb": max_payload_mb,
            "max_concurrent_transforms": max_concurrent_transforms,
            "max_failed_records": max_failed_records,
            "max_failed_percent": max_failed_percent,
            "explain": explain,
            "environment": environment or {},
            "shard_size_mb": shard_size_mb,
        }
        return dict(self._json("POST", BATCH, "/transform-jobs", json=body))

    def describe_transform_job(self, job_name: str) -> dict[str, Any]:
        return dict(self._json("GET", BATCH, f"/transform-jobs/{job_name}"))

    def list_transform_jobs(self) -> list[dict[str, Any]]:
        return list(self._json("GET", BATCH, "/transform-jobs")["transform_jobs"])

    def stop_transform_job(self, job_name: str) -> dict[str, Any]:
        return dict(self._json("POST", BATCH, f"/transform-jobs/{job_name}/stop"))

    def wait_for_transform_job(
        self,
        job_name: str,
        *,
        timeout_s: float = 24 * 3600,
        poll_s: float = 1.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job completes, fails or stops; `on_progress` sees every description."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.describe_transform_job(job_name)
            if on_progress is not None:
                on_progress(job)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"transform job {job_name} still {job['status']} after {timeout_s}s"
                )
            time.sleep(poll_s)
