"""`cairn pipelines create|update|describe|list|start`, `executions ...`, `trigger ...`.

A definition file is YAML or JSON (the SDK's `Pipeline.to_yaml()` writes one). `start --wait` and
`executions describe --watch` draw the DAG's steps with their live statuses until the end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from cairn_sdk.pipelines import TERMINAL
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cairn_cli.sdk_common import (
    EXIT_SERVICE_ERROR,
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    parse_pairs,
    parse_value,
    print_json,
    service_errors,
    table,
)

pipelines_app = typer.Typer(
    name="pipelines",
    help="Pipelines: workflows of steps, started by hand or by events.",
    no_args_is_help=True,
)
executions_app = typer.Typer(name="executions", help="Runs of pipelines.", no_args_is_help=True)
trigger_app = typer.Typer(name="trigger", help="Start pipelines on events.", no_args_is_help=True)
pipelines_app.add_typer(executions_app)
pipelines_app.add_typer(trigger_app)

ParamOption = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE (repeatable).")
]
STATUS_STYLE = {
    "Pending": "dim",
    "Executing": "yellow",
    "Retrying": "magenta",
    "Succeeded": "green",
    "Failed": "red",
    "Skipped": "dim",
    "Stopped": "red",
}


def read_definition(path: Path) -> dict[str, Any]:
    """A YAML or JSON file (JSON is YAML); exit 2 when it is not a mapping."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"cannot read {path}: {error}", param_hint="FILE") from None
    if not isinstance(loaded, dict):
        raise typer.BadParameter(f"{path} does not hold a pipeline definition", param_hint="FILE")
    return loaded


@pipelines_app.command("create")
def create(
    name: str,
    file: Annotated[Path, typer.Argument(help="The definition, YAML or JSON.")],
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Create a pipeline (version 1); a bad definition is refused naming the spot."""
    with service_errors(), client_for(target, home) as client:
        created = client.create_pipeline(read_definition(file), name=name)
    print_json(created) if as_json else Console().print(f"pipeline {name} version 1 created")


@pipelines_app.command("update")
def update(
    name: str,
    file: Annotated[Path, typer.Argument(help="The definition, YAML or JSON.")],
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Add a version of a pipeline; running executions keep the version they started with."""
    with service_errors(), client_for(target, home) as client:
        updated = client.update_pipeline(name, read_definition(file))
    if as_json:
        print_json(updated)
    else:
        Console().print(f"pipeline {name} version {updated['version']} created")


@pipelines_app.command("describe")
def describe(
    name: str,
    version: Annotated[int | None, typer.Option("--version", help="Default: the latest.")] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """A pipeline version: parameters and steps (with `--json`, the whole definition)."""
    with service_errors(), client_for(target, home) as client:
        found = client.describe_pipeline(name, version)
    if as_json:
        print_json(found)
        return
    definition = found["definition"]
    Console().print(f"[bold]{name}[/] version {found['version']} by {found['created_by']}")
    params = [(k, v["type"], v.get("default")) for k, v in definition["parameters"].items()]
    Console().print(table("Parameters", ("name", "type", "default"), params))
    rows = [(s["name"], s["type"], ", ".join(s.get("depends_on", []))) for s in definition["steps"]]
    Console().print(table("Steps", ("step", "type", "depends on (besides references)"), rows))


@pipelines_app.command("list")
def list_pipelines(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Every pipeline with its latest version."""
    with service_errors(), client_for(target, home) as client:
        found = client.list_pipelines()
    if as_json:
        print_json(found)
        return
    rows = [(p["name"], p["latest_version"], p["steps"], p["updated_at"][:19]) for p in found]
    Console().print(table("Pipelines", ("pipeline", "version", "steps", "updated"), rows))


def outline(properties: dict[str, Any]) -> str:
    """The short scalars a step reported (metrics, version, outcome); long names left out."""
    flat: dict[str, Any] = {}
    for key, value in properties.items():
        if isinstance(value, dict):
            flat.update({k: v for k, v in value.items() if not isinstance(v, dict | list)})
        else:
            flat[key] = value
    shown = [
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in flat.items()
        if not isinstance(value, str) or len(value) <= 24
    ]
    return " ".join(shown)


def dag_view(execution: dict[str, Any]) -> Group:
    """The steps in definition order with their live status, attempt and outcome."""
    grid = Table(header_style="bold", title_justify="left")
    for column in ("step", "type", "status", "attempt", "cache", "detail"):
        grid.add_column(column)
    for step in execution["steps"]:
        status = step["status"]
        detail = step.get("failure_reason") or ""
        if status == "Succeeded":
            detail = outline(step.get("properties") or {})
        grid.add_row(
            step["name"],
            step["type"],
            Text(status, style=STATUS_STYLE.get(status, "")),
            str(step["attempt"] or "-"),
            "hit" if step.get("cache_hit") else "",
            detail,
        )
    head = Text.assemble(
        (f"{execution['pipeline_name']} ", "bold"),
        f"{execution['execution_id']}  ",
        (execution["status"], STATUS_STYLE.get(execution["status"], "")),
    )
    return Group(head, grid)


def watch(client: Any, execution_id: str, as_json: bool, poll_s: float = 0.5) -> dict[str, Any]:
    """Redraw the DAG until the execution ends; exit 1 unless it succeeded."""
    console = Console(stderr=as_json)
    execution: dict[str, Any] = client.describe_pipeline_execution(execution_id)
    with Live(dag_view(execution), console=console, refresh_per_second=4) as live:
        while execution["status"] not in TERMINAL:
            time.sleep(poll_s)
            execution = client.describe_pipeline_execution(execution_id)
            live.update(dag_view(execution))
    return execution


def finish(execution: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(execution)
    if execution["status"] != "Succeeded":
        if not as_json:
            Console(stderr=True).print(
                f"[red]{execution['status']}:[/] {execution.get('failure_reason')}"
            )
        raise typer.Exit(EXIT_SERVICE_ERROR)


@pipelines_app.command("start")
def start(
    name: str,
    params: ParamOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the DAG live to the end.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Start an execution with parameters (`-p dataset=dataset://credit@2`)."""
    values = {key: parse_value(value) for key, value in parse_pairs(params, "--param").items()}
    with service_errors(), client_for(target, home) as client:
        started = client.start_pipeline(name, values)
        if not wait:
            if as_json:
                print_json(started)
            else:
                Console().print(f"execution {started['execution_id']} of {name} started")
            return
        execution = watch(client, started["execution_id"], as_json)
    finish(execution, as_json)


@executions_app.command("list")
def list_executions(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this one's.")] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Executions, newest first."""
    with service_errors(), client_for(target, home) as client:
        found = client.list_pipeline_executions(pipeline)
    if as_json:
        print_json(found)
        return
    rows = [
        (
            e["execution_id"],
            e["pipeline_name"],
            e["status"],
            sum(s["status"] == "Succeeded" for s in e["steps"]),
            len(e["steps"]),
            e.get("trigger_name"),
            e["created_at"][:19],
        )
        for e in found
    ]
    columns = ("execution", "pipeline", "status", "done", "steps", "trigger", "started")
    Console().print(table("Pipeline executions", columns, rows))


@executions_app.command("describe")
def describe_execution(
    execution_id: str,
    follow: Annotated[bool, typer.Option("--watch", help="Follow it live to the end.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """One execution: each step's status, attempt, cache hit and outcome."""
    with service_errors(), client_for(target, home) as client:
        if follow:
            finish(watch(client, execution_id, as_json), as_json)
            return
        execution = client.describe_pipeline_execution(execution_id)
    print_json(execution) if as_json else Console().print(dag_view(execution))


@executions_app.command("stop")
def stop_execution(
    execution_id: str,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Stop starting steps; running ones finish (`retry` continues it)."""
    with service_errors(), client_for(target, home) as client:
        execution = client.stop_pipeline_execution(execution_id)
    print_json(execution) if as_json else Console().print(f"{execution_id}: {execution['status']}")


@executions_app.command("retry")
def retry_execution(
    execution_id: str,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the DAG live to the end.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Run a failed or stopped execution again from its failed steps."""
    with service_errors(), client_for(target, home) as client:
        execution = client.retry_pipeline_execution(execution_id)
        if wait:
            execution = watch(client, execution_id, as_json)
            finish(execution, as_json)
            return
    print_json(execution) if as_json else Console().print(f"{execution_id}: {execution['status']}")


@pipelines_app.command("callback")
def callback(
    token: str,
    failed: Annotated[bool, typer.Option("--failed", help="Fail the waiting step.")] = False,
    outputs: Annotated[
        list[str] | None, typer.Option("--output", "-o", help="NAME=VALUE (repeatable).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason")] = "",
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """End a waiting Callback step (its token is in PipelineCallbackWaiting)."""
    values = {key: parse_value(value) for key, value in parse_pairs(outputs, "--output").items()}
    with service_errors(), client_for(target, home) as client:
        client.send_pipeline_callback(token, succeeded=not failed, outputs=values, reason=reason)
    Console().print("callback sent")


@trigger_app.command("add")
def add_trigger(
    name: Annotated[str, typer.Argument(help="The pipeline to start.")],
    on: Annotated[str | None, typer.Option("--on", help="A catalogue event type.")] = None,
    where: Annotated[
        str | None, typer.Option("--where", help='A filter: data.dataset_name == "credit"')
    ] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="Cron, in UTC.")] = None,
    params: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=TEMPLATE, e.g. dataset={data.uri} (repeatable)."),
    ] = None,
    trigger_name: Annotated[str | None, typer.Option("--name", help="Default: derived.")] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Start NAME on every matching event (once per event), or on a cron schedule."""
    with service_errors(), client_for(target, home) as client:
        added = client.add_pipeline_trigger(
            name,
            on=on,
            where=where,
            schedule=schedule,
            parameters=dict(parse_pairs(params, "--param")),
            trigger_name=trigger_name,
        )
    print_json(added) if as_json else Console().print(f"trigger {added['trigger_name']} added")


@trigger_app.command("list")
def list_triggers(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Every trigger."""
    with service_errors(), client_for(target, home) as client:
        found = client.list_pipeline_triggers()
    if as_json:
        print_json(found)
        return
    rows = [
        (t["trigger_name"], t["pipeline_name"], t["event_type"] or t["schedule"], t["where"])
        for t in found
    ]
    Console().print(table("Triggers", ("trigger", "pipeline", "on", "where"), rows))


@trigger_app.command("remove")
def remove_trigger(trigger_name: str, target: TargetOption = None, home: HomeOption = None) -> None:
    """Remove a trigger; executions it started go on."""
    with service_errors(), client_for(target, home) as client:
        client.remove_pipeline_trigger(trigger_name)
    Console().print(f"trigger {trigger_name} removed")


def register(app: typer.Typer) -> None:
    """`cairn pipelines ...`."""
    app.add_typer(pipelines_app)
