"""How `cairn up` and `cairn status` draw the platform: one rich table, or plain lines."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.table import Table

from cairn.runtime.state import RuntimeState, ServiceState

CONSOLE = "console"  # the web console's page is where a person starts: its URL goes under the table
_STATUS_STYLE = {
    "healthy": "green",
    "starting": "yellow",
    "unhealthy": "red",
    "backoff": "red",
    "stopping": "dim",
    "stopped": "dim",
}


def _uptime(service: ServiceState, now: datetime) -> str:
    if service.started_at is None or service.pid is None:
        return "-"
    seconds = int((now - service.started_at).total_seconds())
    minutes, seconds = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def services_table(state: RuntimeState) -> Table:
    """A table of every service: name, pid, URL, status, restarts, uptime."""
    broker = "embedded" if state.broker_embedded else "external"
    caption = f"kafka {state.kafka_bootstrap_servers} ({broker}) · store {state.store_url}"
    console = next((s for s in state.services if s.name == CONSOLE), None)
    if console is not None:
        caption += f"\nconsole: {console.url}/ui/"
    table = Table(title=f"Cairn on {state.home}", caption=caption)
    for column in ("service", "pid", "url", "status", "restarts", "uptime"):
        table.add_column(column)
    now = datetime.now(UTC)
    for service in state.services:
        style = _STATUS_STYLE.get(service.status, "")
        table.add_row(
            service.name,
            str(service.pid) if service.pid else "-",
            service.url,
            f"[{style}]{service.status}[/]" if style else service.status,
            str(service.restarts),
            _uptime(service, now),
        )
    return table


def service_line(service: ServiceState) -> str:
    """One plain line per service, for logs and non-terminal output."""
    return (
        f"{service.name}: {service.status} pid={service.pid or '-'} url={service.url} "
        f"restarts={service.restarts}"
    )
