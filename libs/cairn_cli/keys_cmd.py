"""`cairn keys create | list | revoke` and `cairn audit`: who may do what, and what they did."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from cairn.auth.scopes import SCOPES
from rich.console import Console
from rich.markup import escape

from cairn_cli.durations import parse_duration, parse_since
from cairn_cli.sdk_common import (
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    print_json,
    service_errors,
    table,
)

keys_app = typer.Typer(
    name="keys",
    help="API keys: create (with scopes, endpoints, expiry), list and revoke. Needs admin.",
    no_args_is_help=True,
)


def _scopes(given: list[str] | None) -> list[str]:
    """The --scope values (default: read); exit 2 naming an unknown one and the known ones."""
    scopes = list(dict.fromkeys(given or ["read"]))
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise typer.BadParameter(
            f"unknown scope {', '.join(map(repr, unknown))}; scopes: {', '.join(SCOPES)}",
            param_hint="--scope",
        )
    return scopes


@keys_app.command("create")
def create_key(
    name: Annotated[
        str, typer.Option("--name", "-n", help="The principal the key acts as (audit).")
    ] = "user",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            "-s",
            help=f"Repeatable: {', '.join(SCOPES)}. Default: read.",
            show_default=False,
        ),
    ] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint", "-e", help="Repeatable: the only endpoints an invoke key may call."
        ),
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime: 90m, 12h, 30d, 2w. Default: none.")
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="What it is for.")] = "",
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Create a key; its token (KEY_ID:SECRET) is shown only now."""
    scopes = _scopes(scope)
    if endpoint and not {"invoke", "admin"} & set(scopes):
        raise typer.BadParameter(
            "--endpoint narrows invoke: add --scope invoke", param_hint="--endpoint"
        )
    expires_at = (
        datetime.now(UTC) + parse_duration(expires_in, "--expires-in") if expires_in else None
    )
    with service_errors(), client_for(target, home) as client:
        key = client.create_key(
            name, scopes=scopes, endpoints=endpoint, expires_at=expires_at, description=description
        )
    if as_json:
        print_json(key)
        return
    console = Console()
    console.print(table("Key created", _KEY_COLUMNS, [_key_row(key)]))
    console.print(f"token (shown only now): [bold]{escape(key['token'])}[/]", highlight=False)
    if scopes == ["invoke"]:
        target_name = endpoint[0] if endpoint and len(endpoint) == 1 else "ENDPOINT"
        console.print(
            f"call with it: cairn invoke {target_name} --access-key '{key['token']}' --body ...",
            highlight=False,
            markup=False,
        )
    else:
        console.print(
            f"use it: export CAIRN_API_KEY='{key['token']}'", highlight=False, markup=False
        )


_KEY_COLUMNS = ("key_id", "name", "scopes", "endpoints", "expires_at", "status", "description")


def _key_row(key: dict[str, Any]) -> tuple[Any, ...]:
    return (
        key.get("key_id"),
        key.get("name"),
        ",".join(key.get("scopes") or []),
        ",".join(key.get("endpoints") or ["*"]),
        key.get("expires_at"),
        key.get("status", "Active"),
        key.get("description") or None,
    )


@keys_app.command("list")
def list_keys(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Every key with its scopes, endpoints, expiry and status (never a secret)."""
    with service_errors(), client_for(target, home) as client:
        keys = client.list_keys()
    if as_json:
        print_json(keys)
        return
    Console().print(table("API keys", _KEY_COLUMNS, [_key_row(key) for key in keys]))


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (CKIA...).")],
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Revoke a key: every service refuses it from now on."""
    with service_errors(), client_for(target, home) as client:
        key = client.revoke_key(key_id)
    if as_json:
        print_json(key)
        return
    Console().print(f"revoked {key.get('key_id', key_id)} ({key.get('name')})", highlight=False)


_AUDIT_COLUMNS = ("at", "principal", "action", "resource", "outcome", "status", "correlation_id")


def audit(
    since: Annotated[
        str | None,
        typer.Option("--since", help="1h, 7d, ... ago, or an ISO time. Default: all."),
    ] = None,
    principal: Annotated[
        str | None, typer.Option("--principal", "-p", help="Only this principal.")
    ] = None,
    resource: Annotated[
        str | None, typer.Option("--resource", "-r", help="Only this resource (request path).")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", "-a", help="Only this action (key.create, ...).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most.")] = 100,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """The audit trail, newest first: who changed what, when, and how it ended."""
    moment = parse_since(since, "--since") if since else None
    with service_errors(), client_for(target, home) as client:
        records = client.audit_records(
            since=moment, principal=principal, resource=resource, action=action, limit=limit
        )
    if as_json:
        print_json(records)
        return
    rows = [
        (
            record.get("at"),
            record.get("principal"),
            record.get("action"),
            record.get("resource"),
            record.get("outcome"),
            record.get("status_code"),
            record.get("correlation_id"),
        )
        for record in records
    ]
    Console().print(table(f"Audit trail ({len(rows)} records)", _AUDIT_COLUMNS, rows))


def register(app: typer.Typer) -> None:
    """Add the `keys` group and `audit` to the `cairn` app."""
    app.add_typer(keys_app)
    app.command("audit")(audit)
