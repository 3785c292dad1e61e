"""`cairn pools list | render-keda`: worker pools as the autoscaler sees them, and for KEDA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from cairn.contracts.state import WorkerPoolDeclaration, list_states
from cairn.errors import CairnError
from cairn.settings import CairnSettings
from cairn.store import open_store
from cairn_sdk import service_url
from rich.console import Console
from rich.table import Table

from cairn_cli.sdk_common import api_headers

pools_app = typer.Typer(help="Worker pools sized on consumer-group lag.", no_args_is_help=True)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", help="Runtime folder. Default: CAIRN_HOME or .cairn.", show_default=False
    ),
]


def _settings(home: Path | None) -> CairnSettings:
    return CairnSettings(home=home) if home is not None else CairnSettings()


def autoscaler_url(home: Path) -> str | None:
    """The running autoscaler's URL (CAIRN_AUTOSCALER_URL, else `cairn up`'s state), or None."""
    return service_url("autoscaler", home=home)


def fetch_pools(url: str, home: Path | None = None) -> list[dict[str, Any]]:
    """`GET /pools` of an autoscaler, with the user's credential."""
    response = httpx.get(
        f"{url.rstrip('/')}/pools", headers=api_headers(home), timeout=5.0, trust_env=False
    )
    response.raise_for_status()
    pools: list[dict[str, Any]] = response.json()["pools"]
    return pools


def _declared(settings: CairnSettings) -> list[dict[str, Any]]:
    return [
        {
            **pool.model_dump(include={"name", "group_id", "min_replicas", "max_replicas"}),
            "pool": pool.name,
            "current": None,
            "desired": None,
            "lag": None,
            "last_change": None,
        }
        for pool in list_states(open_store(settings=settings), WorkerPoolDeclaration)
    ]


def pools_table(pools: list[dict[str, Any]]) -> Table:
    """One row per pool: replicas now / wanted, bounds, lag and the last change's reason."""
    table = Table(title="worker pools")
    for column in ("pool", "group", "current", "desired", "min-max", "lag", "last change"):
        table.add_column(column)
    for pool in pools:
        change = pool.get("last_change")
        table.add_row(
            pool["pool"],
            str(pool.get("group_id", "")),
            "-" if pool.get("current") is None else str(pool["current"]),
            "-" if pool.get("desired") is None else str(pool["desired"]),
            f"{pool['min_replicas']}-{pool['max_replicas']}",
            "-" if pool.get("lag") is None else str(pool["lag"]),
            (f"{change['current']}->{change['target']}: {change['reason']}" if change else "-"),
        )
    return table


@pools_app.command("list")
def list_pools(
    home: HomeOption = None,
    url: Annotated[
        str | None,
        typer.Option(help="Autoscaler URL. Default: the one `cairn up` runs on --home."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each pool's replicas, desired count, lag and last decision (declarations if not running)."""
    settings = _settings(home)
    console = Console()
    target = url or autoscaler_url(settings.home.resolve())
    try:
        pools = fetch_pools(target, settings.home) if target else _declared(settings)
    except (httpx.HTTPError, CairnError) as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"running": target is not None, "pools": pools}, default=str))
        return
    if target is None:
        console.print("autoscaler not running; declared pools:", highlight=False)
    console.print(pools_table(pools))


@pools_app.command("render-keda")
def render_keda(
    bootstrap_servers: Annotated[
        str, typer.Option(help="Kafka bootstrap servers as the cluster's pods reach them.")
    ] = "kafka:9092",
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "cairn",
    pool: Annotated[
        list[str] | None, typer.Option("--pool", help="Only this pool (repeatable).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the YAML here instead of stdout.")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Autoscaler URL. Default: the one `cairn up` runs.")
    ] = None,
    home: HomeOption = None,
) -> None:
    """KEDA ScaledObject manifests (YAML) for the declared pools, rendered by the autoscaler."""
    settings = _settings(home)
    target = url or autoscaler_url(settings.home.resolve())
    if target is None:
        typer.echo("error: the autoscaler is not running (start it, or pass --url)", err=True)
        raise typer.Exit(1)
    params: dict[str, Any] = {"bootstrap_servers": bootstrap_servers, "namespace": namespace}
    if pool:
        params["pool"] = pool
    response = httpx.get(
        f"{target.rstrip('/')}/keda/scaled-objects",
        params=params,
        headers=api_headers(settings.home),
        timeout=10.0,
        trust_env=False,
    )
    if response.status_code != 200:
        typer.echo(f"error: {response.json().get('error', response.text)}", err=True)
        raise typer.Exit(1)
    text = yaml.safe_dump_all(response.json()["scaled_objects"], sort_keys=False)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)


def register(app: typer.Typer) -> None:
    """Add `pools` to the `cairn` app."""
    app.add_typer(pools_app, name="pools")
