"""`cairn transform create | describe | list | stop | wait`: batch transform jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from cairn_sdk import Client, service_url
from cairn_sdk.batch import BatchCalls
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cairn_cli.sdk_common import (
    EXIT_SERVICE_ERROR,
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    key_value_table,
    print_json,
    service_errors,
    table,
)

transform_app = typer.Typer(
    name="transform", help="Batch transform: score whole datasets.", no_args_is_help=True
)


def batch_calls(client: Client, target: str | None, home: Path | None) -> BatchCalls:
    """The client's batch calls, with the batch service's URL (CAIRN_BATCH_URL, --target, up)."""
    urls = dict(client.urls)
    found = service_url("batch", None, home) or (target.rstrip("/") if target else None)
    if found:
        urls["batch"] = found
    if isinstance(client, BatchCalls):
        client.urls = urls
        return client
    calls = BatchCalls.__new__(BatchCalls)
    calls.urls, calls._http = urls, client._http
    return calls


@transform_app.command("create")
def create(
    job_name: Annotated[str, typer.Argument(help="Job name; the same name resumes a job.")],
    input_uri: Annotated[str, typer.Option("--input", help="dataset://d@v or a store prefix.")],
    output_uri: Annotated[str, typer.Option("--output", help="Output prefix under outputs/.")],
    model: Annotated[
        str | None, typer.Option("--model", help="GROUP:VERSION of a registered model.")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="Or score against this live endpoint (needs invoke)."),
    ] = None,
    content_type: Annotated[str, typer.Option("--content-type")] = "text/csv",
    accept: Annotated[str | None, typer.Option("--accept")] = None,
    split_type: Annotated[str, typer.Option("--split-type", help="None or Line.")] = "Line",
    compression: Annotated[str, typer.Option("--compression", help="None or Gzip.")] = "None",
    csv_header: Annotated[bool, typer.Option("--csv-header")] = False,
    strategy: Annotated[
        str, typer.Option("--batch-strategy", help="SingleRecord or MultiRecord.")
    ] = "MultiRecord",
    max_payload: Annotated[int, typer.Option("--max-payload-mb", min=0, max=100)] = 6,
    concurrency: Annotated[int, typer.Option("--max-concurrent-transforms", min=1)] = 1,
    input_filter: Annotated[str, typer.Option("--input-filter")] = "$",
    output_filter: Annotated[str, typer.Option("--output-filter")] = "$",
    join_source: Annotated[str, typer.Option("--join-source", help="None or Input.")] = "None",
    max_failed: Annotated[
        str, typer.Option("--max-failed-records", help="A count, or a percent: 0.5%.")
    ] = "0",
    explain: Annotated[bool, typer.Option("--explain", help="Add TreeSHAP columns.")] = False,
    shard_size: Annotated[float | None, typer.Option("--shard-size-mb")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow with a progress bar.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Start a batch transform job (CreateTransformJob) with a model or a live endpoint."""
    if (model is None) == (endpoint is None):
        raise typer.BadParameter(
            "give --model GROUP:VERSION or --endpoint NAME", param_hint="--model"
        )
    count, percent = _failure_limit(max_failed)
    with service_errors(), client_for(target, home) as client:
        calls = batch_calls(client, target, home)
        created = calls.create_transform_job(
            job_name,
            model,
            input_uri,
            output_uri,
            content_type=content_type,
            accept=accept,
            split_type=split_type,
            compression=compression,
            csv_header=csv_header,
            batch_strategy=strategy,
            max_payload_mb=max_payload,
            max_concurrent_transforms=concurrency,
            input_filter=input_filter,
            output_filter=output_filter,
            join_source=join_source,
            max_failed_records=count,
            max_failed_percent=percent,
            explain=explain,
            shard_size_mb=shard_size,
            endpoint_name=endpoint,
        )
        if not wait:
            verb = "resumed" if created.get("resumed") else "requested"
            print_json(created) if as_json else Console().print(f"transform job {job_name} {verb}")
            return
        job = _follow(calls, job_name, as_json)
    _finish(job, as_json)


def _failure_limit(text: str) -> tuple[int, float | None]:
    try:
        if text.endswith("%"):
            return 0, float(text[:-1])
        return int(text), None
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a count or a percent", param_hint="--max-failed-records"
        ) from None


def _follow(calls: BatchCalls, job_name: str, as_json: bool) -> dict[str, Any]:
    """Progress: shards done / total, records/s and failed records, until the job ends."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.fields[shards]} shards"),
        TextColumn("{task.fields[rate]} rec/s  {task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=as_json) as progress:
        task = progress.add_task(job_name, total=None, rate="0", failed=0, shards="?")

        def show(job: dict[str, Any]) -> None:
            progress.update(
                task,
                total=job["shards_total"] or None,
                shards=job["shards_total"] or "?",
                completed=job["shards_done"],
                rate=f"{job['records_per_s']:,.0f}",
                failed=job["records_failed"],
                description=f"{job_name} {job['status']}",
            )

        return calls.wait_for_transform_job(job_name, poll_s=0.5, on_progress=show)


def _finish(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(job)
    elif job["status"] == "Completed":
        Console().print(
            f"[green]Completed[/] {job['job_name']}: {job['records_out']} records written, "
            f"{job['records_failed']} failed; manifest {job['manifest_key']}"
        )
    else:
        Console().print(f"[red]{job['status']}[/] {job['job_name']}: {job.get('failure_reason')}")
    if job["status"] != "Completed":
        raise typer.Exit(EXIT_SERVICE_ERROR)


@transform_app.command("describe")
def describe(
    job_name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """One job: status, progress, counts, outcome."""
    with service_errors(), client_for(target, home) as client:
        job = batch_calls(client, target, home).describe_transform_job(job_name)
    print_json(job) if as_json else Console().print(key_value_table(job_name, job))


@transform_app.command("list")
def list_jobs(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Every transform job, newest first."""
    with service_errors(), client_for(target, home) as client:
        jobs = batch_calls(client, target, home).list_transform_jobs()
    if as_json:
        print_json(jobs)
        return
    rows = [
        (
            j["job_name"],
            j["status"],
            f"{j['shards_done']}/{j['shards_total']}",
            j["records_out"],
            j["records_failed"],
            j["created_at"][:19],
        )
        for j in jobs
    ]
    columns = ("job", "status", "shards", "records", "failed", "created")
    Console().print(table("Transform jobs", columns, rows))


@transform_app.command("stop")
def stop(
    job_name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Stop a job; `cairn transform create` with the same request resumes it."""
    with service_errors(), client_for(target, home) as client:
        job = batch_calls(client, target, home).stop_transform_job(job_name)
    print_json(job) if as_json else Console().print(f"transform job {job_name}: {job['status']}")


@transform_app.command("wait")
def wait_job(
    job_name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Follow a job to its end with a progress bar; exit 1 unless it completes."""
    with service_errors(), client_for(target, home) as client:
        job = _follow(batch_calls(client, target, home), job_name, as_json)
    _finish(job, as_json)


def register(app: typer.Typer) -> None:
    """`cairn transform ...`."""
    app.add_typer(transform_app)
