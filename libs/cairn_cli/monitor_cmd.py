"""`cairn monitor schedule create|list|delete`, `cairn monitor run` and `cairn monitor runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cairn_cli.sdk_common import (
    HomeOption,
    JsonOption,
    call_service,
    print_json,
    require_service_url,
)

MONITOR_SERVICE = "monitor"
TIMEOUT_S = 60.0

monitor_app = typer.Typer(
    name="monitor", help="Monitoring schedules and runs (drift, quality).", no_args_is_help=True
)
schedule_app = typer.Typer(name="schedule", help="Monitoring schedules.", no_args_is_help=True)
monitor_app.add_typer(schedule_app)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Monitor service URL. Default: CAIRN_MONITOR_URL, else the platform on --home.",
        show_default=False,
    ),
]


def monitor_url(url: str | None, home: Path | None = None) -> str:
    """--url, else CAIRN_MONITOR_URL, else the monitor service of the platform on --home."""
    return require_service_url(MONITOR_SERVICE, url, home)


def _call(method: str, url: str | None, home: Path | None, path: str, **kwargs: Any) -> Any:
    """One call to the monitor named by --url / the environment / the platform on --home."""
    base = monitor_url(url, home)
    return call_service(method, base + path, home=home, timeout_s=TIMEOUT_S, **kwargs)


@schedule_app.command("create")
def create(
    endpoint: Annotated[str, typer.Argument(help="Endpoint to monitor.")],
    interval_s: Annotated[float, typer.Option("--interval-s", help="Seconds between runs.")] = 3600,
    p_value: Annotated[float, typer.Option("--p-value", help="Drift test level.")] = 0.05,
    correction: Annotated[str, typer.Option(help="bonferroni or fdr.")] = "bonferroni",
    min_rows: Annotated[int, typer.Option("--min-rows", help="Rows a run waits for.")] = 100,
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """Create or change the monitoring schedule of an endpoint."""
    body = {
        "interval_s": interval_s,
        "drift_p_value": p_value,
        "correction": correction,
        "min_rows": min_rows,
    }
    schedule = _call("POST", url, home, f"/schedules/{endpoint}", json=body)
    typer.echo(
        f"schedule {endpoint}: every {schedule['interval_s']:g}s, next {schedule['next_run_at']}"
    )


@schedule_app.command("list")
def list_schedules(url: UrlOption = None, home: HomeOption = None) -> None:
    """Every monitoring schedule and where it stands."""
    table = Table("endpoint", "interval_s", "min_rows", "runs", "last run", "next run")
    for item in _call("GET", url, home, "/schedules"):
        table.add_row(
            item["endpoint_name"],
            f"{item['interval_s']:g}",
            str(item["min_rows"]),
            str(item["runs_completed"]),
            item.get("last_run_id") or "-",
            item["next_run_at"],
        )
    Console().print(table)


@schedule_app.command("delete")
def delete(endpoint: str, url: UrlOption = None, home: HomeOption = None) -> None:
    """Stop monitoring an endpoint."""
    _call("DELETE", url, home, f"/schedules/{endpoint}")
    typer.echo(f"schedule {endpoint} deleted")


def _runs_table(items: list[dict[str, Any]]) -> Table:
    table = Table("run", "model", "rows", "drifted", "violations", "quality", "report")
    for item in items:
        quality = ", ".join(f"{k}={v:.4g}" for k, v in item["quality_metrics"].items())
        table.add_row(
            item["run_id"],
            f"{item['model_package_group']} v{item['model_version']}",
            str(item["rows_checked"]),
            ", ".join(item["drifted_features"]) or "-",
            str(len(item["violations"])),
            quality or "-",
            item["report_uri"],
        )
    return table


@monitor_app.command("runs")
def runs(endpoint: str, url: UrlOption = None, home: HomeOption = None) -> None:
    """The completed runs of an endpoint: drift, violations and model quality over time."""
    Console().print(_runs_table(_call("GET", url, home, f"/schedules/{endpoint}/runs")))


@monitor_app.command("run")
def run_now(
    endpoint: Annotated[str, typer.Argument(help="Endpoint with a monitoring schedule.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """Check the endpoint's traffic since its last run now, instead of at the next interval."""
    summary = _call("POST", url, home, f"/schedules/{endpoint}/run")
    if as_json:
        print_json(summary)
        return
    if summary is None:
        typer.echo(
            f"no run for {endpoint}: it serves no model, has fewer captured rows than the "
            "schedule's --min-rows since its last run, or a run is in progress"
        )
        return
    drifted = ", ".join(summary["drifted_features"]) or "none"
    typer.echo(
        f"run {summary['run_id']}: {summary['rows_checked']} rows, drifted: {drifted}, "
        f"{len(summary['violations'])} violation(s); report {summary['report_uri']}"
    )


def register(app: typer.Typer) -> None:
    """Add the `monitor` group to the `cairn` app."""
    app.add_typer(monitor_app)
