"""`cairn models list | describe | approve | reject`: model package versions in the registry."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from cairn_cli.sdk_common import (
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    format_metrics,
    key_value_table,
    print_json,
    service_errors,
    table,
)

models_app = typer.Typer(
    name="models",
    help="Model package groups and versions: list, inspect, approve, reject.",
    no_args_is_help=True,
)

ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the approval history).")]
STATUSES = ("PendingManualApproval", "Approved", "Rejected")


@models_app.command("list")
def list_models(
    group: Annotated[str | None, typer.Argument(help="Group. Default: list the groups.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help=f"Only versions in: {', '.join(STATUSES)}.")
    ] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """The model package groups, or the versions of one group."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(
            f"{status!r} is not one of {', '.join(STATUSES)}", param_hint="--status"
        )
    with service_errors(), client_for(target, home) as client:
        if group is None:
            groups = client.list_model_package_groups()
            if as_json:
                print_json(groups)
                return
            summary = [(g["name"], g["latest_version"], g.get("aliases") or {}) for g in groups]
            Console().print(table("Model package groups", ("group", "latest", "aliases"), summary))
            return
        versions = client.list_model_packages(group, status)
    if as_json:
        print_json(versions)
        return
    rows = [
        (
            v["version"],
            v["approval_status"],
            (v.get("lineage") or {}).get("training_job"),
            format_metrics(v.get("metrics") or {}, limit=3),
            v["created_at"][:19],
        )
        for v in versions
    ]
    columns = ("version", "approval", "training job", "metrics", "created")
    Console().print(table(f"Model package group {group}", columns, rows))


@models_app.command("describe")
def describe_model(
    group: str,
    version: Annotated[str, typer.Argument(help="Version number or alias (champion).")],
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """One version: approval and its history, metrics, lineage, endpoints."""
    with service_errors(), client_for(target, home) as client:
        document = client.describe_model_package(group, version)
    if as_json:
        print_json(document)
        return
    Console().print(key_value_table(f"{group} version {document['version']}", document))


@models_app.command("approve")
def approve(
    group: str,
    version: str,
    reason: ReasonOption = "",
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Approve a version as your key's principal (an auto-deploy policy may then deploy it)."""
    with service_errors(), client_for(target, home) as client:
        document = client.approve(group, version, reason=reason)
    _decided(document, as_json)


@models_app.command("reject")
def reject(
    group: str,
    version: str,
    reason: ReasonOption = "",
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Reject a version as your key's principal (it can no longer be deployed)."""
    with service_errors(), client_for(target, home) as client:
        document = client.reject(group, version, reason=reason)
    _decided(document, as_json)


def _decided(document: dict[str, object], as_json: bool) -> None:
    if as_json:
        print_json(document)
        return
    Console().print(
        f"{document['model_package_group']} version {document['version']}: "
        f"[bold]{document['approval_status']}[/]"
    )


def register(app: typer.Typer) -> None:
    """Add `models` to the `cairn` app."""
    app.add_typer(models_app)
