"""`cairn labeling jobs | workforces`: labeling jobs (Ground Truth) and the people who label."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from cairn_sdk import labeling
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

labeling_app = typer.Typer(
    name="labeling",
    help="Labeling jobs and workforces (the annotator's page is /ui/).",
    no_args_is_help=True,
)
jobs_app = typer.Typer(name="jobs", help="Labeling jobs.", no_args_is_help=True)
workforces_app = typer.Typer(
    name="workforces", help="Named sets of annotators.", no_args_is_help=True
)
labeling_app.add_typer(jobs_app)
labeling_app.add_typer(workforces_app)
EXPORT_WAIT_S = 600.0
TASK_TYPES = (
    "text-classification",
    "tabular-classification",
    "multi-label",
    "image-classification",
    "bounding-box",
)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _show(document: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print_json(document)
    else:
        Console().print(key_value_table(title, document))


@workforces_app.command("create")
def workforces_create(
    name: str,
    members: Annotated[str, typer.Option("--members", "-m", help="Comma-separated member names.")],
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Create a workforce; each member gets a `label` credential, shown only now."""
    with service_errors(), client_for(target, home) as client:
        made = labeling.create_workforce(client, name, _split(members))
    if as_json:
        print_json(made)
        return
    rows = [(member, token) for member, token in made["tokens"].items()]
    Console().print(table(f"Workforce {name}: credentials (shown once)", ("member", "token"), rows))


@workforces_app.command("list")
def workforces_list(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        found = labeling.list_workforces(client)
    if as_json:
        print_json(found)
        return
    rows = [(w["workforce_name"], ", ".join(m["name"] for m in w["members"])) for w in found]
    Console().print(table("Workforces", ("workforce", "members"), rows))


@workforces_app.command("describe")
def workforces_describe(
    name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        _show(labeling.describe_workforce(client, name), as_json, f"Workforce {name}")


@jobs_app.command("create")
def jobs_create(
    job_name: str,
    dataset: Annotated[str, typer.Option("--dataset", help="dataset://name@version.")],
    task: Annotated[str, typer.Option("--task", help=" | ".join(TASK_TYPES))],
    labels: Annotated[str, typer.Option("--labels", help="Comma-separated label set.")],
    instructions: Annotated[
        Path | None, typer.Option("--instructions", help="A text file shown to annotators.")
    ] = None,
    workers_per_item: Annotated[int, typer.Option("--workers-per-item", min=1)] = 3,
    workforce: Annotated[str, typer.Option("--workforce", help="Who labels.")] = "default",
    task_time_limit: Annotated[
        int, typer.Option("--task-time-limit", help="Seconds a claimed task is held.")
    ] = 300,
    auto_label: Annotated[bool, typer.Option("--auto-label")] = False,
    text_column: Annotated[str | None, typer.Option("--text-column")] = None,
    image_column: Annotated[
        str | None, typer.Option("--image-column", help="Column of image keys in the store.")
    ] = None,
    id_column: Annotated[str | None, typer.Option("--id-column")] = None,
    order: Annotated[str, typer.Option("--order", help="sequential or uncertainty.")] = (
        "sequential"
    ),
    score_column: Annotated[
        str | None, typer.Option("--score-column", help="The model's confidence (uncertainty).")
    ] = None,
    consolidation: Annotated[
        str, typer.Option("--consolidation", help="dawid-skene or majority-vote.")
    ] = "dawid-skene",
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job ends.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Start a labeling job over a dataset version (CreateLabelingJob)."""
    text = instructions.read_text() if instructions is not None else ""
    with service_errors(), client_for(target, home) as client:
        created = labeling.create_labeling_job(
            client,
            job_name,
            dataset,
            task,
            _split(labels),
            workforce,
            workers_per_item=workers_per_item,
            task_time_limit_s=task_time_limit,
            instructions=text,
            text_column=text_column,
            image_column=image_column,
            id_column=id_column,
            order=order,
            score_column=score_column,
            consolidation=consolidation,
            auto_label=auto_label,
        )
        if not wait:
            if as_json:
                print_json(created)
            else:
                Console().print(f"labeling job {job_name} requested; annotators: <labeling>/ui/")
            return
        job = labeling.wait_for_labeling_job(client, job_name)
    _finish(job, as_json)


def _finish(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(job)
    elif job["status"] == "Completed":
        counters = job["label_counters"]
        Console().print(
            f"[green]Completed[/] {job['job_name']}: {counters['human_labeled']} labelled by "
            f"people, {counters['machine_labeled']} by a model; {job['output_dataset_uri']}"
        )
    else:
        Console().print(f"[red]{job['status']}[/] {job['job_name']}: {job.get('failure_reason')}")
    if job["status"] != "Completed":
        raise typer.Exit(EXIT_SERVICE_ERROR)


@jobs_app.command("describe")
def jobs_describe(
    job_name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """A job's status, counters, agreement and output dataset versions."""
    with service_errors(), client_for(target, home) as client:
        job = labeling.describe_labeling_job(client, job_name)
    if as_json:
        print_json(job)
        return
    shown = {k: v for k, v in job.items() if k not in ("request", "agreement")}
    agreement = job.get("agreement") or {}
    shown["krippendorff_alpha"] = agreement.get("krippendorff_alpha")
    shown["pairwise_agreement"] = agreement.get("pairwise")
    Console().print(key_value_table(f"Labeling job {job_name}", shown))


@jobs_app.command("list")
def jobs_list(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        found = labeling.list_labeling_jobs(client)
    if as_json:
        print_json(found)
        return
    rows = [
        (
            j["job_name"],
            j["status"],
            j["task_type"],
            f"{j['items_done']}/{j['item_count']}",
            j["output_dataset_uri"] or "",
        )
        for j in found
    ]
    Console().print(table("Labeling jobs", ("job", "status", "task", "done", "output"), rows))


@jobs_app.command("stop")
def jobs_stop(
    job_name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Stop a job; its answers are kept and can still be exported."""
    with service_errors(), client_for(target, home) as client:
        _show(labeling.stop_labeling_job(client, job_name), as_json, f"Stopped {job_name}")


@jobs_app.command("export")
def jobs_export(
    job_name: str,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the dataset version.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Consolidate the answers so far into a new version of dataset://<job>-labels."""
    with service_errors(), client_for(target, home) as client:
        before = labeling.export_labeling_job(client, job_name)
        job = before
        deadline = time.monotonic() + EXPORT_WAIT_S
        while wait and job["pending_export"] and time.monotonic() < deadline:
            time.sleep(0.5)
            job = labeling.describe_labeling_job(client, job_name)
    if as_json:
        print_json(job)
    elif wait and job["output_versions"]:
        Console().print(f"exported {job['output_versions'][-1]}")
    else:
        Console().print(f"export of {job_name} requested (dataset://{job_name}-labels)")


def register(app: typer.Typer) -> None:
    """`cairn labeling ...`."""
    app.add_typer(labeling_app)
