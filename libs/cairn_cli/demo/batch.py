"""The demo's batch step: score the whole validation set with explanations, no endpoint needed.

A transform job reads the validation dataset's Parquet, scores every row with the registered
model, and writes each row joined with its probability and its per-feature contributions
(TreeSHAP), SageMaker's "explanations in batch". The job's progress is shown as it runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from cairn.errors import InvalidInput
from cairn.store import open_store
from cairn_sdk import Client
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cairn_cli.demo.data import LABEL

PARQUET = "application/x-parquet"
OUTPUT_ROOT = "outputs/demo/batch"
PREVIEW_ROWS = 3


def score_validation_set(
    client: Client, console: Console, summary: dict[str, Any], store_url: str | None
) -> dict[str, Any]:
    """Run the transform job, show its progress and a preview; what the summary records of it."""
    job_name = f"credit-risk-batch-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    output = f"{OUTPUT_ROOT}/{job_name}/"
    model = f"{summary['model_package_group']}:{summary['model_version']}"
    client.create_transform_job(
        job_name,
        model,
        summary["datasets"]["validation"],
        output,
        content_type=PARQUET,
        accept=PARQUET,
        join_source="Input",
        explain=True,
    )
    job = _follow(client, job_name, console)
    if job["status"] != "Completed":
        raise InvalidInput(f"transform job {job_name} {job['status']}: {job.get('failure_reason')}")
    console.print(
        f"   {job['records_out']:,} rows scored, {job['records_failed']} failed, "
        f"{job['records_per_s']:,.0f} rows/s -> {output}"
    )
    outputs = _output_keys(store_url, job["manifest_key"])
    if store_url is not None and outputs:
        console.print(_preview(store_url, outputs[0], summary["feature_columns"]))
    return {
        "job_name": job_name,
        "output_path": output,
        "manifest_key": job["manifest_key"],
        "outputs": outputs,
        "records_out": job["records_out"],
        "records_failed": job["records_failed"],
    }


def _follow(client: Client, job_name: str, console: Console) -> dict[str, Any]:
    columns = (
        TextColumn("   [bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.fields[shards]} shards"),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(job_name, total=None, shards="?", rate="0")

        def show(job: dict[str, Any]) -> None:
            progress.update(
                task,
                total=job["shards_total"] or None,
                completed=job["shards_done"],
                shards=job["shards_total"] or "?",
                rate=f"{job['records_per_s']:,.0f}",
                description=f"{job_name} {job['status']}",
            )

        return client.wait_for_transform_job(job_name, poll_s=0.3, on_progress=show)


def _output_keys(store_url: str | None, manifest_key: str) -> list[str]:
    """The assembled outputs named by the manifest (readable when the store is local)."""
    if store_url is None:
        return []
    manifest = json.loads(open_store(store_url).get_bytes(manifest_key))
    return [entry["output"] for entry in manifest["outputs"]]


def _preview(store_url: str, key: str, features: list[str]) -> Table:
    """The first rows: label, probability and the strongest contribution of each."""
    table = pq.read_table(pa.BufferReader(open_store(store_url).get_bytes(key)))
    rows = table.slice(0, PREVIEW_ROWS).to_pylist()
    probability = next(c for c in table.column_names if c not in features and c != LABEL)
    grid = Table(title="Batch output (joined with the input)", title_justify="left")
    for column in ("row", "actual default", "probability", "strongest contribution"):
        grid.add_column(column, justify="right")
    for index, row in enumerate(rows):
        name = max(features, key=lambda f: abs(row.get(f"contribution_{f}") or 0.0))
        grid.add_row(
            str(index),
            str(row.get(LABEL)),
            f"{row[probability]:.4f}",
            f"{name} {row[f'contribution_{name}']:+.4f}",
        )
    return grid
