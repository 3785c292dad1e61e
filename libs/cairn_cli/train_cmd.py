"""`cairn train` and `cairn jobs list | describe | logs | wait`: training jobs via the trainer."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from cairn_sdk import tuning
from rich.console import Console

from cairn_cli.sdk_common import (
    EXIT_SERVICE_ERROR,
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    format_metrics,
    key_value_table,
    parse_pairs,
    parse_value,
    print_json,
    service_errors,
    table,
    wait_for_job,
)

CONTENT_TYPES = ("text/csv", "application/x-parquet", "application/jsonlines", "text/plain")

jobs_app = typer.Typer(
    name="jobs", help="List, inspect and wait for training jobs.", no_args_is_help=True
)


def train(
    job_name: Annotated[str, typer.Argument(help="Unique job name (letters, digits, dashes).")],
    algorithm: Annotated[
        str, typer.Option("--algorithm", "-a", help="xgboost, linear-learner, kmeans, pca, ...")
    ] = "xgboost",
    hyperparameter: Annotated[
        list[str] | None,
        typer.Option(
            "--hyperparameter", "-p", help="NAME=VALUE (repeatable), e.g. -p num_round=50."
        ),
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option(
            "--channel", "-c", help="NAME=URI (repeatable): train=dataset://credit@1, ..."
        ),
    ] = None,
    content_type: Annotated[
        str, typer.Option("--content-type", help=f"Channel format: {', '.join(CONTENT_TYPES)}.")
    ] = "text/csv",
    label: Annotated[str | None, typer.Option("--label", help="Label column.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or gpu.")] = "cpu",
    register: Annotated[
        str | None, typer.Option("--register", help="Register the model into this group.")
    ] = None,
    max_runtime: Annotated[
        int | None, typer.Option("--max-runtime", min=1, help="Stop after this many seconds.")
    ] = None,
    instances: Annotated[
        int, typer.Option("--instances", min=1, help="Dask workers (xgboost) or script hosts.")
    ] = 1,
    input_mode: Annotated[
        str, typer.Option("--input-mode", help="File, Pipe (streamed) or FastFile.")
    ] = "File",
    checkpoint_uri: Annotated[
        str | None,
        typer.Option("--checkpoint-uri", help="Store prefix under outputs/ for checkpoints."),
    ] = None,
    checkpoint_interval: Annotated[
        int | None, typer.Option("--checkpoint-interval", min=1, help="Rounds between them.")
    ] = None,
    max_wait: Annotated[
        int | None,
        typer.Option("--max-wait", min=1, help="Seconds for the whole job, waits included."),
    ] = None,
    allow_cpu_fallback: Annotated[
        bool, typer.Option("--allow-cpu-fallback", help="A GPU job may run on a CPU worker.")
    ] = False,
    image: Annotated[
        str | None,
        typer.Option("--image", help="Your own training image (SageMaker's /opt/ml contract)."),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="NAME=REGEX (repeatable): a metric read from the log."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait with a progress bar.")] = False,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="The experiment this job is a run of.")
    ] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Start a training job (CreateTrainingJob); --wait follows it to the end."""
    channels = parse_pairs(channel, "--channel")
    if not channels and algorithm != "reinforcement-learning":  # RL trains on an env id
        raise typer.BadParameter(
            "give at least one, e.g. --channel train=URI", param_hint="--channel"
        )
    if content_type not in CONTENT_TYPES:
        raise typer.BadParameter(
            f"{content_type!r} is not one of {', '.join(CONTENT_TYPES)}",
            param_hint="--content-type",
        )
    if device not in ("cpu", "gpu"):
        raise typer.BadParameter(f"{device!r} is not cpu or gpu", param_hint="--device")
    modes: dict[str, Literal["File", "Pipe", "FastFile"]] = {
        "File": "File",
        "Pipe": "Pipe",
        "FastFile": "FastFile",
    }
    if input_mode not in modes:
        raise typer.BadParameter(
            f"{input_mode!r} is not File, Pipe or FastFile", param_hint="--input-mode"
        )
    hyperparameters = {
        name: parse_value(value) for name, value in parse_pairs(hyperparameter, "-p").items()
    }
    chosen_device: Literal["cpu", "gpu"] = "gpu" if device == "gpu" else "cpu"
    if image and algorithm == "xgboost":  # the default: an image job is a `script` job
        algorithm = "script"
    metric_definitions = parse_pairs(metric, "--metric")
    console = Console(stderr=as_json)
    with service_errors(), client_for(target, home) as client:
        created = client.create_training_job(
            job_name,
            algorithm,
            channels,
            hyperparameters=hyperparameters,
            content_type=content_type,
            label_column=label,
            device=chosen_device,
            register_group=register,
            max_runtime_s=max_runtime,
            experiment=experiment,
            instance_count=instances,
            input_mode=modes[input_mode],
            checkpoint_uri=checkpoint_uri,
            checkpoint_interval_rounds=checkpoint_interval,
            max_wait_s=max_wait,
            allow_cpu_fallback=allow_cpu_fallback,
            image=image,
            metric_definitions=metric_definitions,
        )
        if not wait:
            if as_json:
                print_json(created)
            else:
                console.print(f"training job [bold]{job_name}[/] requested ({created['status']})")
            return
        job = wait_for_job(client, job_name, console)
    _report_finished(job, console, as_json)


def _report_finished(job: dict[str, object], console: Console, as_json: bool) -> None:
    if as_json:
        print_json(job)
    elif job["status"] == "Completed":
        metrics = job.get("metrics") or {}
        shown = format_metrics(metrics if isinstance(metrics, dict) else {}, limit=8)
        console.print(f"[green]Completed[/] {job['job_name']}: {job['artifact_uri']}  {shown}")
    elif job["status"] == "Stopped":
        console.print(f"[yellow]Stopped[/] {job['job_name']}: {job.get('artifact_uri') or ''}")
    else:
        console.print(f"[red]Failed[/] {job['job_name']}: {job.get('failure_reason')}")
    if job["status"] != "Completed":
        raise typer.Exit(EXIT_SERVICE_ERROR)


@jobs_app.command("list")
def list_jobs(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Every training job, newest first."""
    with service_errors(), client_for(target, home) as client:
        jobs = sorted(client.list_training_jobs(), key=lambda j: j["created_at"], reverse=True)
    if as_json:
        print_json(jobs)
        return
    rows = [
        (
            j["job_name"],
            j["algorithm"],
            j["status"],
            j["device"],
            j["created_at"][:19],
            format_metrics(j.get("metrics") or {}, limit=2),
        )
        for j in jobs
    ]
    columns = ("job", "algorithm", "status", "device", "created", "metrics")
    Console().print(table("Training jobs", columns, rows))


@jobs_app.command("describe")
def describe_job(
    job_name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """One job's document: status, timings, device, metrics, failure reason."""
    with service_errors(), client_for(target, home) as client:
        job = client.describe_training_job(job_name)
    if as_json:
        print_json(job)
        return
    Console().print(key_value_table(f"Training job {job_name}", job))


@jobs_app.command("logs")
def job_logs(
    job_name: str,
    attempt: Annotated[
        int | None, typer.Option("--attempt", min=1, help="Default: the latest attempt.")
    ] = None,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """One attempt's log as stored so far (a taken-over attempt keeps its own)."""
    with service_errors(), client_for(target, home) as client:
        typer.echo(tuning.training_job_logs(client, job_name, attempt), nl=False)


@jobs_app.command("stop")
def stop_job(
    job_name: str,
    keep_partial_model: Annotated[
        bool, typer.Option("--keep-partial-model", help="Keep the model trained so far.")
    ] = False,
    reason: Annotated[str, typer.Option("--reason")] = "",
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Stop a training job (StopTrainingJob): its worker is free within about a second."""
    with service_errors(), client_for(target, home) as client:
        job = tuning.stop_training_job(
            client, job_name, reason=reason, keep_partial_model=keep_partial_model
        )
    if as_json:
        print_json(job)
    else:
        Console().print(f"training job [bold]{job_name}[/] is {job['status']}")


@jobs_app.command("wait")
def wait_job(
    job_name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Follow a job to its end with a progress bar and live metrics (exit 1 if it fails)."""
    console = Console(stderr=as_json)
    with service_errors(), client_for(target, home) as client:
        job = wait_for_job(client, job_name, console)
    _report_finished(job, console, as_json)


def register(app: typer.Typer) -> None:
    """Add `train` and `jobs` to the `cairn` app."""
    app.command("train")(train)
    app.add_typer(jobs_app)
