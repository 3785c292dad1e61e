"""Batch transform jobs: their documents, the shard plan and the rules of the job's life. No I/O.

A job is split into shards: byte ranges of CSV / JSON Lines / text files (each record belongs to
the shard holding its first byte, so a record straddling a boundary is read whole by exactly one
shard), runs of Parquet row groups, or a whole image file (one record). Each shard's output is
written once; the job completes when every shard is done and the outputs are assembled, one
`<input>.out` per input file.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
from datetime import datetime
from typing import Literal

from cairn.contracts.batch_events import TransformJobRequested
from cairn.contracts.envelope import utc_now
from pydantic import BaseModel, Field

JOBS_PREFIX = "batch/jobs"
CSV = "text/csv"
JSONLINES = "application/jsonlines"
PARQUET = "application/x-parquet"
TEXT = "text/plain"
JSON = "application/json"
PNG = "image/png"
# Image files are whole records (one request each); a `.lst` manifest of them is a line each.
IMAGE_TYPES = ("application/x-image", PNG, "image/jpeg")
CONTENT_TYPES = (CSV, JSONLINES, PARQUET, TEXT, *IMAGE_TYPES)
ACCEPT_TYPES = (CSV, JSONLINES, PARQUET, JSON, PNG)
IMAGE_MANIFEST_SUFFIX = ".lst"
ERRORS_FOLDER = "errors"
MANIFEST_NAME = "manifest.json"
MAX_PAYLOAD_PRODUCT_MB = 100

JobStatus = Literal["Pending", "InProgress", "Completed", "Failed", "Stopped"]
TERMINAL: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})


class InputFile(BaseModel):
    """One input object and where its output goes (relative to the output prefix)."""

    key: str
    size: int = Field(ge=0)
    relative: str = Field(description="Its path under the input prefix; the output's name.")


class ShardCounts(BaseModel):
    records_in: int = Field(default=0, ge=0)
    records_out: int = Field(default=0, ge=0)
    records_failed: int = Field(default=0, ge=0)


class Shard(BaseModel):
    """`batch/jobs/<job>/shards/<index>.json`: one unit of work, created once by the planner."""

    job_name: str
    index: int = Field(ge=0)
    file_index: int = Field(ge=0)
    input_key: str
    start: int = Field(default=0, ge=0, description="Byte range start (text inputs).")
    end: int = Field(default=0, ge=0, description="Byte range end, exclusive.")
    row_groups: list[int] = Field(default_factory=list, description="Parquet row groups.")
    first_row: int = Field(default=0, ge=0, description="File row number of its first row.")
    status: Literal["Pending", "Done"] = "Pending"
    counts: ShardCounts = Field(default_factory=ShardCounts)
    worker_id: str | None = None
    completed_at: datetime | None = None


class TransformJob(BaseModel):
    """`batch/jobs/<job>.json`: the request, the plan's size, progress and outcome."""

    job_name: str
    request: TransformJobRequested
    request_sha256: str
    status: JobStatus = "Pending"
    attempt: int = Field(default=0, ge=0)
    last_event_id: str | None = None
    correlation_id: str | None = None
    model_uri: str | None = None
    input_files: list[InputFile] = Field(default_factory=list)
    shards_total: int = Field(default=0, ge=0)
    planned: bool = False
    done: dict[str, ShardCounts] = Field(default_factory=dict, description="By shard index.")
    manifest_key: str | None = None
    failure_reason: str | None = None
    failure_code: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def totals(self) -> ShardCounts:
        return ShardCounts(
            records_in=sum(c.records_in for c in self.done.values()),
            records_out=sum(c.records_out for c in self.done.values()),
            records_failed=sum(c.records_failed for c in self.done.values()),
        )


def job_key(job_name: str) -> str:
    return f"{job_name}.json"


def shard_key(job_name: str, index: int) -> str:
    return f"{job_name}/shards/{index:05d}.json"


def part_key(job_name: str, index: int) -> str:
    """The shard's output, private to the batch service until assembled."""
    return f"{JOBS_PREFIX}/{job_name}/parts/{index:05d}.out"


def output_key(output_prefix: str, relative: str) -> str:
    return posixpath.join(output_prefix, relative + ".out")


def errors_key(output_prefix: str, relative: str, index: int) -> str:
    return posixpath.join(output_prefix, ERRORS_FOLDER, f"{relative}.{index:05d}.jsonl")


def manifest_key(output_prefix: str) -> str:
    return posixpath.join(output_prefix, MANIFEST_NAME)


def request_fingerprint(request: TransformJobRequested) -> str:
    """What makes a re-request the same job: all but the failure limits (raised to resume)."""
    body = request.model_dump_json(exclude={"max_failed_records", "max_failed_percent", "tags"})
    return hashlib.sha256(body.encode()).hexdigest()


def accept_of(request: TransformJobRequested) -> str:
    return request.transform_output.accept or request.transform_input.content_type


def splittable(request: TransformJobRequested) -> bool:
    return (
        request.transform_input.split_type == "Line"
        and request.transform_input.compression_type == "None"
    )


def whole_file(content_type: str, key: str) -> bool:
    """An image file is one record, sent whole; a `.lst` manifest of images is read by line."""
    return content_type in IMAGE_TYPES and not key.endswith(IMAGE_MANIFEST_SUFFIX)


def byte_ranges(size: int, shard_bytes: int) -> list[tuple[int, int]]:
    """`[start, end)` ranges covering a file; records are later aligned to their first byte."""
    if size == 0:
        return [(0, 0)]
    count = max(1, math.ceil(size / shard_bytes))
    step = math.ceil(size / count)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def group_row_groups(sizes: list[int], shard_bytes: int) -> list[list[int]]:
    """Consecutive row groups, at least `shard_bytes` each (the last may be smaller)."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        current.append(index)
        total += size
        if total >= shard_bytes:
            groups.append(current)
            current, total = [], 0
    if current or not groups:
        groups.append(current)
    return groups


def failure_allowance(request: TransformJobRequested, records_in: int) -> int:
    """How many failed records the job may have: a count, or a share of the records seen."""
    if request.max_failed_percent is None:
        return request.max_failed_records
    share = math.floor(request.max_failed_percent / 100 * records_in)
    return max(request.max_failed_records, share)


def too_many_failures(job: TransformJob, *, final: bool) -> bool:
    """Past the limit; a percent limit is only judged on the whole job."""
    totals = job.totals()
    if job.request.max_failed_percent is not None and not final:
        return False
    return totals.records_failed > failure_allowance(job.request, totals.records_in)


def summary(job: TransformJob) -> dict[str, object]:
    """What list and describe show besides the request: status, progress, outcome."""
    totals = job.totals()
    elapsed = 0.0
    if job.started_at is not None:
        elapsed = ((job.ended_at or utc_now()) - job.started_at).total_seconds()
    return {
        "job_name": job.job_name,
        "status": job.status,
        "attempt": job.attempt,
        "model_uri": job.model_uri,
        "endpoint_name": job.request.endpoint_name,
        "output_path": job.request.transform_output.output_path,
        "shards_total": job.shards_total,
        "shards_done": len(job.done),
        **totals.model_dump(),
        "records_per_s": round(totals.records_in / elapsed, 1) if elapsed > 0 else 0.0,
        "elapsed_s": round(elapsed, 3),
        "manifest_key": job.manifest_key,
        "failure_reason": job.failure_reason,
        "failure_code": job.failure_code,
        "created_at": job.created_at.isoformat(),
    }
