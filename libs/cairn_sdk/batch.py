"""Batch transform jobs: CreateTransformJob, Describe, List, Stop and a waiter."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cairn.errors import InvalidInput, Unavailable

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

BATCH: ServiceName = "batch"
TERMINAL = ("Completed", "Failed", "Stopped")


class BatchCalls(ServiceCaller):
    """The batch service's `/transform-jobs` API."""

    def create_transform_job(
        self,
        job_name: str,
        model: str | None,
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
        endpoint_name: str | None = None,
    ) -> dict[str, Any]:
        """Start a job (or resume the job of that name).

        Args:
            job_name: the job; the same name and request resumes it.
            model: `GROUP:VERSION` of a registered model, loaded by the batch workers; or None
                with `endpoint_name`.
            input_uri: `dataset://name@version` or a store prefix.
            output_uri: a store prefix under `outputs/`.
            endpoint_name: score against this live endpoint through the gateway instead (your
                key needs `invoke` on it).
        """
        if (model is None) == (endpoint_name is None):
            raise InvalidInput("give a model (GROUP:VERSION) or an endpoint name, not both")
        target: dict[str, Any] = {"endpoint_name": endpoint_name}
        if model is not None:
            group, _, version = model.partition(":")
            target = {
                "model_package_group": group,
                "model_version": int(version) if version.isdigit() else version,
            }
        body = {
            "job_name": job_name,
            **target,
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
        """Poll until the job completes, fails or stops; `on_progress` sees every description.

        A batch service that restarts meanwhile is waited for (on its new URL if it moved): the
        job goes on without it, so its real outcome is what this returns.
        """
        deadline = time.monotonic() + timeout_s
        path = f"/transform-jobs/{job_name}"
        while True:
            job = dict(self._json_through_restarts("GET", BATCH, path))
            if on_progress is not None:
                on_progress(job)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"transform job {job_name} still {job['status']} after {timeout_s}s"
                )
            time.sleep(poll_s)
