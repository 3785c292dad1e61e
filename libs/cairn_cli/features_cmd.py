"""`cairn features ...`: feature groups, PutRecord / GetRecord and training sets over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Column, Table

from cairn_cli.sdk_common import call_service, require_service_url

SERVICE_NAME = "featurestore"
URL_VARIABLE = "CAIRN_FEATURESTORE_URL"
FEATURE_TYPES = ("Integral", "Fractional", "String", "Boolean", "Timestamp")
TIMEOUT_S = 300.0

TIE_RULE = (
    "Records with the same id and event time: the later write wins (PutRecord, a batch and "
    "DeleteRecord are each a write), then the later record of a batch. GetRecord, time travel "
    "and training sets all follow this rule (docs/contracts.md)."
)
features_app = typer.Typer(
    name="features",
    help=f"Feature groups, records and training sets.\n\n{TIE_RULE}",
    no_args_is_help=True,
)
groups_app = typer.Typer(name="groups", help="Create, list and describe feature groups.")
training_app = typer.Typer(name="training-set", help="Point-in-time correct training sets.")
features_app.add_typer(groups_app)
features_app.add_typer(training_app)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help=f"Feature store URL. Default: {URL_VARIABLE}, else the platform `cairn up` runs.",
        show_default=False,
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Runtime folder of `cairn up`. Default: CAIRN_HOME or .cairn."),
]


def service_url(url: str | None, home: Path | None) -> str:
    """--url, else CAIRN_FEATURESTORE_URL, else the running platform's feature store."""
    return require_service_url(SERVICE_NAME, url, home)


def _fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def _call(method: str, url: str, home: Path | None, path: str, **kwargs: Any) -> Any:
    return call_service(method, url + path, home=home, timeout_s=TIMEOUT_S, **kwargs)


def _print_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2))


def _json_argument(text: str, what: str) -> Any:
    """JSON given inline, as @file, or `-` for stdin."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"{what} is not valid JSON: {exc}", 2) from None


def _feature(spec: str) -> dict[str, str]:
    name, _, kind = spec.partition(":")
    if kind not in FEATURE_TYPES:
        raise _fail(f"--feature {spec!r}: use NAME:TYPE with TYPE one of {FEATURE_TYPES}", 2)
    return {"name": name, "type": kind}


@groups_app.command("create")
def create_group(
    name: Annotated[str, typer.Argument(help="Feature group name.")],
    record_id: Annotated[str, typer.Option("--record-id", help="Record identifier feature.")],
    event_time: Annotated[str, typer.Option("--event-time", help="Event time feature.")],
    feature: Annotated[
        list[str], typer.Option("--feature", "-f", help="NAME:TYPE, repeated (keys included).")
    ],
    ttl_s: Annotated[float | None, typer.Option("--ttl-s", help="Online TTL in seconds.")] = None,
    online: Annotated[bool, typer.Option("--online/--no-online")] = True,
    offline: Annotated[bool, typer.Option("--offline/--no-offline")] = True,
    description: Annotated[str, typer.Option("--description")] = "",
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """Create a feature group (the same definition again is a no-op)."""
    body = {
        "feature_group_name": name,
        "record_identifier_feature_name": record_id,
        "event_time_feature_name": event_time,
        "feature_definitions": [_feature(spec) for spec in feature],
        "online_enabled": online,
        "offline_enabled": offline,
        "ttl_s": ttl_s,
        "description": description,
    }
    _print_json(_call("POST", service_url(url, home), home, "/feature-groups", json=body))


@groups_app.command("list")
def list_groups(url: UrlOption = None, home: HomeOption = None) -> None:
    """List feature groups."""
    groups = _call("GET", service_url(url, home), home, "/feature-groups")["feature_groups"]
    table = Table(
        Column("name", no_wrap=True),
        *("record id", "event time", "features", "online", "offline", "ttl_s"),
    )
    for group in groups:
        table.add_row(
            group["feature_group_name"],
            group["record_identifier_feature_name"],
            group["event_time_feature_name"],
            str(len(group["feature_definitions"])),
            str(group["online_enabled"]),
            str(group["offline_enabled"]),
            "" if group["ttl_s"] is None else str(group["ttl_s"]),
        )
    Console().print(table)


@groups_app.command("describe")
def describe_group(
    name: Annotated[str, typer.Argument()], url: UrlOption = None, home: HomeOption = None
) -> None:
    """Show a feature group's definition."""
    _print_json(_call("GET", service_url(url, home), home, f"/feature-groups/{name}"))


@features_app.command("put")
def put_record(
    group: Annotated[str, typer.Argument(help="Feature group name.")],
    record: Annotated[str, typer.Argument(help="The record as a JSON object, @FILE or - (stdin).")],
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """PutRecord: store one record (refused with the reason when it breaks the schema)."""
    body = _json_argument(record, "the record")
    if not isinstance(body, dict):
        raise _fail("the record must be a JSON object", 2)
    payload = body if "Record" in body else {"record": body}
    _print_json(
        _call("PUT", service_url(url, home), home, f"/feature-groups/{group}/records", json=payload)
    )


@features_app.command("get")
def get_record(
    group: Annotated[str, typer.Argument(help="Feature group name.")],
    record_id: Annotated[str, typer.Argument(help="Record identifier.")],
    features: Annotated[
        str | None, typer.Option("--features", help="Comma-separated feature names.")
    ] = None,
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """GetRecord: the latest live record from the online store."""
    params = {"features": features} if features else None
    path = f"/feature-groups/{group}/records/{quote(record_id, safe='')}"
    _print_json(_call("GET", service_url(url, home), home, path, params=params))


@training_app.command("create")
def create_training_set(
    name: Annotated[str, typer.Argument(help="Training set (and dataset) name.")],
    entity: Annotated[str, typer.Option("--entity", help="dataset://name@version of entities.")],
    id_column: Annotated[str, typer.Option("--id-column", help="Entity id column.")],
    time_column: Annotated[str, typer.Option("--time-column", help="Entity timestamp column.")],
    feature: Annotated[
        list[str], typer.Option("--feature", "-f", help="GROUP or GROUP:FEATURE, repeated.")
    ],
    as_of_known_time: Annotated[
        bool, typer.Option("--as-of-known-time", help="Also ignore values written later.")
    ] = False,
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """Build a point-in-time correct training set and store it as a dataset."""
    body = {
        "training_set_name": name,
        "entity_dataset_uri": entity,
        "entity_id_column": id_column,
        "entity_time_column": time_column,
        "features": feature,
        "as_of_known_time": as_of_known_time,
    }
    _print_json(_call("POST", service_url(url, home), home, "/training-sets", json=body))


@training_app.command("describe")
def describe_training_set(
    name: Annotated[str, typer.Argument()], url: UrlOption = None, home: HomeOption = None
) -> None:
    """Show a built training set: its request, dataset URI and row count."""
    _print_json(_call("GET", service_url(url, home), home, f"/training-sets/{name}"))


def register(app: typer.Typer) -> None:
    """Add the `features` group to the `cairn` app."""
    app.add_typer(features_app)
