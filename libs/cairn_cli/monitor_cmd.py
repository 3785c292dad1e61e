"""`cairn monitor schedule create|list|delete` and `cairn monitor runs`: the monitor's API."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cairn_cli.sdk_common import call_service, require_service_url

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
        help="Monitor service URL. Default: CAIRN_MONITOR_URL, else the platform on CAIRN_HOME.",
        show_default=False,
    ),
]


def monitor_url(url: str | None) -> str:
    """--url, else CAIRN_MONITOR_URL, else the monitor service of the running platform."""
    return require_service_url(MONITOR_SERVICE, url)


def _call(method: str, url: str, **kwargs: Any) -> Any:
    return call_service(method, url, timeout_s=TIMEOUT_S, **kwargs)


@schedule_app.command("create")
def create(
    endpoint: Annotated[str, typer.Argument(help="Endpoint to monitor.")],
    interval_s: Annotated[float, typer.Option("--interval-s", help="Seconds between runs.")] = 3600,
    p_value: Annotated[float, typer.Option("--p-value", help="Drift test level.")] = 0.05,
    correction: Annotated[str, typer.Option(help="bonferroni or fdr.")] = "bonferroni",
    min_rows: Annotated[int, typer.Option("--min-rows", help="Rows a run waits for.")] = 100,
    url: UrlOption = None,
) -> None:
    """Create or change the monitoring schedule of an endpoint."""
    body = {
        "interval_s": interval_s,
        "drift_p_value": p_value,
        "correction": correction,
        "min_rows": min_rows,
    }
    schedule = _call("POST", f"{monitor_url(url)}/schedules/{endpoint}", json=body)
    typer.echo(
        f"schedule {endpoint}: every {schedule['interval_s']:g}s, next {schedule['next_run_at']}"
    )


@schedule_app.command("list")
def list_schedules(url: UrlOption = None) -> None:
    """Every monitoring schedule and where it stands."""
    table = Table("endpoint", "interval_s", "min_rows", "runs", "last run", "next run")
    for item in _call("GET", f"{monitor_url(url)}/schedules"):
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
def delete(endpoint: str, url: UrlOption = None) -> None:
    """Stop monitoring an endpoint."""
    _call("DELETE", f"{monitor_url(url)}/schedules/{endpoint}")
    typer.echo(f"schedule {endpoint} deleted")


@monitor_app.command("runs")
def runs(endpoint: str, url: UrlOption = None) -> None:
    """The completed runs of an endpoint: drift, violations and model quality over time."""
    table = Table("run", "model", "rows", "drifted", "violations", "quality", "report")
    for item in _call("GET", f"{monitor_url(url)}/schedules/{endpoint}/runs"):
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
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the `monitor` group to the `cairn` app."""
    app.add_typer(monitor_app)
