"""Planning a job into shards, and assembling the shards' outputs when all are done."""

from __future__ import annotations

import itertools
import tempfile
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from cairn.artifacts import read_manifest
from cairn.contracts.envelope import utc_now
from cairn.contracts.state import EndpointStateView, ModelVersionView, read_state
from cairn.errors import InvalidInput, NotFound
from cairn.store.base import ObjectStore
from pydantic import BaseModel, Field

from services.batch.domain import (
    IMAGE_TYPES,
    PARQUET,
    InputFile,
    Shard,
    ShardCounts,
    TransformJob,
    byte_ranges,
    errors_key,
    group_row_groups,
    manifest_key,
    output_key,
    part_key,
    splittable,
    whole_file,
)
from services.batch.inputs import open_ranged
from services.batch.records import row_group_layout
from services.batch.validation import Plan

# The built-ins that take image files (the others answer records).
IMAGE_ALGORITHMS = frozenset({"image-classification", "object-detection", "semantic-segmentation"})


class ModelNotFound(NotFound):
    code = "model_not_found"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


def resolve_model(
    store: ObjectStore, group: str, version: int, content_type: str | None = None
) -> str:
    """The package URI of a registered model version; ModelNotFound (404) when there is none.

    With `content_type`, image files are refused (400) for a model that does not take images,
    before anything runs (the package's manifest names its algorithm).
    """
    found = read_state(store, ModelVersionView, group, str(version))
    if found is None:
        raise ModelNotFound(
            f"model {group}:{version} is not registered", model_package_group=group, version=version
        )
    if content_type in IMAGE_TYPES:
        algorithm = read_manifest(store, found.artifact_uri).algorithm
        if algorithm not in IMAGE_ALGORITHMS:
            raise InvalidInput(
                f"transform_input.content_type: {content_type} is scored by an image model "
                f"({', '.join(sorted(IMAGE_ALGORITHMS))}); {group}:{version} is {algorithm}",
                field="transform_input.content_type",
            )
    return found.artifact_uri


def check_endpoint(store: ObjectStore, endpoint_name: str) -> EndpointStateView:
    """The deployer's declared state of an endpoint; EndpointNotFound (404) when there is none."""
    found = read_state(store, EndpointStateView, endpoint_name)
    if found is None or found.status == "Deleted":
        raise EndpointNotFound(
            f"endpoint {endpoint_name!r} does not exist", endpoint_name=endpoint_name
        )
    return found


def plan_shards(
    store: ObjectStore, job_name: str, plan: Plan, files: list[InputFile], shard_bytes: int
) -> list[Shard]:
    """Shards covering every input file: byte ranges (text) or runs of row groups (Parquet)."""
    shards: list[Shard] = []
    index = itertools.count()
    for file_index, item in enumerate(files):
        common = {"job_name": job_name, "file_index": file_index, "input_key": item.key}
        if plan.content_type == PARQUET:
            with open_ranged(store, item.key, item.size) as footer:
                layout = row_group_layout(footer)
            starts = list(itertools.accumulate((rows for rows, _ in layout), initial=0))
            for groups in group_row_groups([size for _, size in layout], shard_bytes):
                first = starts[groups[0]] if groups else 0
                shard = Shard(index=next(index), row_groups=groups, first_row=first, **common)
                shards.append(shard)
        elif splittable(plan.request) and not whole_file(plan.content_type, item.key):
            for start, end in byte_ranges(item.size, shard_bytes):
                shards.append(Shard(index=next(index), start=start, end=end, **common))
        else:
            shards.append(Shard(index=next(index), start=0, end=item.size, **common))
    return shards


class OutputEntry(BaseModel):
    input: str
    output: str
    records_in: int = Field(ge=0)
    records_out: int = Field(ge=0)
    records_failed: int = Field(ge=0)
    errors: list[str] = Field(default_factory=list)


class TransformManifest(BaseModel):
    """`<output>/manifest.json`: what a completed job wrote, one entry per input file."""

    job_name: str
    model_uri: str | None = None
    endpoint_name: str | None = None
    accept: str
    outputs: list[OutputEntry]
    completed_at: datetime = Field(default_factory=utc_now)


def assemble(store: ObjectStore, job: TransformJob, plan: Plan, shards: list[Shard]) -> str:
    """One `<input>.out` per input file from its shards' parts, then the manifest; its key."""
    entries: list[OutputEntry] = []
    for file_index, item in enumerate(job.input_files):
        mine = sorted((s for s in shards if s.file_index == file_index), key=lambda s: s.index)
        target = output_key(plan.output_prefix, item.relative)
        _concatenate(store, [part_key(job.job_name, s.index) for s in mine], target, plan.accept)
        counts = [job.done.get(str(s.index), ShardCounts()) for s in mine]
        entries.append(
            OutputEntry(
                input=item.key,
                output=target,
                records_in=sum(c.records_in for c in counts),
                records_out=sum(c.records_out for c in counts),
                records_failed=sum(c.records_failed for c in counts),
                errors=[
                    errors_key(plan.output_prefix, item.relative, s.index)
                    for s, c in zip(mine, counts, strict=True)
                    if c.records_failed
                ],
            )
        )
    manifest = TransformManifest(
        job_name=job.job_name,
        model_uri=job.model_uri,
        endpoint_name=job.request.endpoint_name,
        accept=plan.accept,
        outputs=entries,
    )
    key = manifest_key(plan.output_prefix)
    body = manifest.model_dump_json(indent=2).encode()
    store.put_bytes(key, body, content_type="application/json")
    return key


def _concatenate(store: ObjectStore, parts: list[str], target: str, accept: str) -> None:
    """Parts in order into one object (Parquet parts are merged into one file)."""
    with tempfile.TemporaryDirectory(prefix="cairn-assemble-") as folder:
        path = Path(folder) / "out"
        if accept == PARQUET:
            _merge_parquet(store, parts, Path(folder), path)
        else:
            with path.open("wb") as out:
                for key in parts:
                    for chunk in store.iter_chunks(key):
                        out.write(chunk)
        store.put_file(target, path, content_type=accept)


def _merge_parquet(store: ObjectStore, parts: list[str], folder: Path, path: Path) -> None:
    writer: pq.ParquetWriter | None = None
    try:
        for number, key in enumerate(parts):
            local = folder / f"part-{number}"
            store.get_file(key, local)
            if local.stat().st_size == 0:
                continue
            table = pq.read_table(local)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table.cast(writer.schema))
            local.unlink()
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        path.write_bytes(b"")
