"""`cairn processing run | describe | list | logs`: processing jobs on the trainer's workers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

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

processing_app = typer.Typer(
    name="processing",
    help="Processing jobs: a script or a built-in over inputs, with uploaded outputs.",
    no_args_is_help=True,
)


def _environment(pairs: list[str]) -> dict[str, str]:
    environment = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint="--env")
        environment[name] = value
    return environment


@processing_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def run(
    ctx: typer.Context,
    job_name: Annotated[str, typer.Argument(help="Job name; the same request again is a no-op.")],
    script: Annotated[
        str | None, typer.Option("--script", help="Store key of the script (under code/).")
    ] = None,
    builtin: Annotated[
        str | None,
        typer.Option("--builtin", help="data-quality, train-validation-split or feature-scaling."),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", help="NAME=SOURCE[:/opt/ml/processing/DIR] (repeatable)."),
    ] = None,
    outputs: Annotated[
        list[str] | None,
        typer.Option(
            "--output", help="NAME[=outputs/PREFIX][@DATASET]: @ registers it (repeatable)."
        ),
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="NAME=VALUE (repeatable).")] = None,
    max_runtime: Annotated[int | None, typer.Option("--max-runtime-s", min=1)] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="The experiment this job is a run of.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Start a processing job; arguments after `--` go to the script or built-in."""
    with service_errors(), client_for(target, home) as client:
        job = client.create_processing_job(
            job_name,
            entry_point=script,
            builtin=builtin,
            inputs=inputs or [],
            outputs=outputs or [],
            arguments=list(ctx.args),
            environment=_environment(env or []),
            max_runtime_s=max_runtime,
            experiment=experiment,
        )
        if wait:
            job = client.wait_for_processing_job(job_name)
    if as_json:
        print_json(job)
    else:
        Console().print(f"processing job [bold]{job_name}[/] is {job['status']}")
    if job["status"] == "Failed":
        if not as_json:
            Console(stderr=True).print(f"[red]failed:[/] {job.get('failure_reason')}")
        raise typer.Exit(EXIT_SERVICE_ERROR)


@processing_app.command("describe")
def describe(
    job_name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """One job's document: its request, status, outputs, metrics and failure reason."""
    with service_errors(), client_for(target, home) as client:
        job = client.describe_processing_job(job_name)
    if as_json:
        print_json(job)
        return
    Console().print(key_value_table(f"Processing job {job_name}", job))


@processing_app.command("list")
def list_jobs(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Every processing job, newest first."""
    with service_errors(), client_for(target, home) as client:
        jobs = client.list_processing_jobs()
    if as_json:
        print_json(jobs)
        return
    rows = [
        (j["job_name"], j["program"], j["status"], j["created_at"], j["failure_reason"])
        for j in jobs
    ]
    Console().print(
        table("Processing jobs", ("name", "program", "status", "created", "failure"), rows)
    )


@processing_app.command("logs")
def logs(job_name: str, target: TargetOption = None, home: HomeOption = None) -> None:
    """The latest attempt's log: the program's stdout and stderr, as stored in the store."""
    with service_errors(), client_for(target, home) as client:
        typer.echo(client.processing_job_logs(job_name), nl=False)


def register(app: typer.Typer) -> None:
    """Add `processing` to the `cairn` app."""
    app.add_typer(processing_app)
