"""Labeling jobs and workforces (the labeling service): Ground Truth's verbs, and the annotator's.

Functions take any `ServiceCaller` (a `Client`); `LabelingCalls` offers them as methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from cairn.errors import Unavailable

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

LABELING: ServiceName = "labeling"
TERMINAL_JOB_STATUSES = frozenset({"Completed", "Failed", "Stopped"})


def create_workforce(caller: ServiceCaller, name: str, members: Sequence[str]) -> dict[str, Any]:
    """A named set of people; the answer's `tokens` (shown once) are their `label` credentials."""
    body = {"workforce_name": name, "members": list(members)}
    return dict(caller._json("POST", LABELING, "/workforces", json=body))


def list_workforces(caller: ServiceCaller) -> list[dict[str, Any]]:
    return list(caller._json("GET", LABELING, "/workforces")["workforces"])


def describe_workforce(caller: ServiceCaller, name: str) -> dict[str, Any]:
    return dict(caller._json("GET", LABELING, f"/workforces/{name}"))


def create_labeling_job(
    caller: ServiceCaller,
    job_name: str,
    dataset_uri: str,
    task_type: str,
    labels: Sequence[str],
    workforce_name: str,
    *,
    workers_per_item: int = 3,
    task_time_limit_s: int = 300,
    instructions: str = "",
    text_column: str | None = None,
    image_column: str | None = None,
    id_column: str | None = None,
    order: str = "sequential",
    score_column: str | None = None,
    consolidation: str = "dawid-skene",
    auto_label: bool = False,
) -> dict[str, Any]:
    """Queue a labeling job (CreateLabelingJob); it starts once the service takes the request.

    Args:
        task_type: text-classification, tabular-classification, multi-label,
            image-classification or bounding-box.
        image_column: for image tasks, the column of store keys of the images.
        order: `uncertainty` offers the items whose `score_column` (the current model's
            confidence) is lowest first.
    """
    body = {
        "job_name": job_name,
        "dataset_uri": dataset_uri,
        "task_type": task_type,
        "labels": list(labels),
        "workforce_name": workforce_name,
        "workers_per_item": workers_per_item,
        "task_time_limit_s": task_time_limit_s,
        "instructions": instructions,
        "text_column": text_column,
        "image_column": image_column,
        "id_column": id_column,
        "order": order,
        "score_column": score_column,
        "consolidation": consolidation,
        "auto_label": auto_label,
    }
    return dict(caller._json("POST", LABELING, "/labeling-jobs", json=body))


def describe_labeling_job(caller: ServiceCaller, job_name: str) -> dict[str, Any]:
    return dict(caller._json("GET", LABELING, f"/labeling-jobs/{job_name}"))


def list_labeling_jobs(caller: ServiceCaller) -> list[dict[str, Any]]:
    return list(caller._json("GET", LABELING, "/labeling-jobs")["labeling_jobs"])


def stop_labeling_job(caller: ServiceCaller, job_name: str) -> dict[str, Any]:
    return dict(caller._json("POST", LABELING, f"/labeling-jobs/{job_name}/stop"))


def export_labeling_job(caller: ServiceCaller, job_name: str) -> dict[str, Any]:
    """Consolidate the answers so far into a new version of `dataset://<job>-labels`."""
    return dict(caller._json("POST", LABELING, f"/labeling-jobs/{job_name}/export"))


def labeling_job_quality(caller: ServiceCaller, job_name: str) -> dict[str, Any]:
    """Agreement (Krippendorff's alpha, pairwise) and each annotator's quality so far."""
    return dict(caller._json("GET", LABELING, f"/labeling-jobs/{job_name}/quality"))


def next_labeling_task(caller: ServiceCaller, job_name: str) -> dict[str, Any]:
    """The caller's task (a lease on one item), or `task: None` when nothing is left for them."""
    return dict(caller._json("POST", LABELING, f"/labeling-jobs/{job_name}/tasks/next"))


def answer_labeling_task(
    caller: ServiceCaller,
    job_name: str,
    item_id: str,
    *,
    label: str | None = None,
    labels: Sequence[str] = (),
    boxes: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    body = {"label": label, "labels": list(labels), "boxes": list(boxes)}
    path = f"/labeling-jobs/{job_name}/tasks/{item_id}/answer"
    return dict(caller._json("POST", LABELING, path, json=body))


def skip_labeling_task(caller: ServiceCaller, job_name: str, item_id: str) -> dict[str, Any]:
    path = f"/labeling-jobs/{job_name}/tasks/{item_id}/skip"
    return dict(caller._json("POST", LABELING, path))


def wait_for_labeling_job(
    caller: ServiceCaller,
    job_name: str,
    *,
    timeout_s: float = 7 * 24 * 3600,
    poll_s: float = 2.0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll until the job completes, fails or stops (people label at their pace)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = describe_labeling_job(caller, job_name)
        if on_progress is not None:
            on_progress(job)
        if job["status"] in TERMINAL_JOB_STATUSES:
            return job
        if time.monotonic() >= deadline:
            raise Unavailable(f"labeling job {job_name} is still {job['status']}")
        time.sleep(poll_s)


class LabelingCalls(ServiceCaller):
    """The labeling service's API as methods of `Client`."""

    create_workforce = create_workforce
    list_workforces = list_workforces
    describe_workforce = describe_workforce
    create_labeling_job = create_labeling_job
    describe_labeling_job = describe_labeling_job
    list_labeling_jobs = list_labeling_jobs
    stop_labeling_job = stop_labeling_job
    export_labeling_job = export_labeling_job
    labeling_job_quality = labeling_job_quality
    next_labeling_task = next_labeling_task
    answer_labeling_task = answer_labeling_task
    skip_labeling_task = skip_labeling_task
    wait_for_labeling_job = wait_for_labeling_job
