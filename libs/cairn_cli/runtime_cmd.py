"""`cairn up | status | down`: run the whole platform on this machine and look after it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from cairn.errors import CairnError, ConfigError
from cairn.runtime.discovery import ServiceSpec, discover_services, import_roots
from cairn.runtime.display import services_table
from cairn.runtime.state import (
    HomeLock,
    RuntimeState,
    ServiceStatus,
    answered_by,
    pid_alive,
    read_state,
    remove_state,
)
from cairn.settings import CairnSettings
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape

from cairn_cli.credential import ensure_credential
from cairn_cli.extras import PLATFORM_MODULES, install_hint, missing_modules

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Runtime folder (state, logs, default store). Default: CAIRN_HOME or .cairn.",
        show_default=False,
    ),
]


def _settings(home: Path | None, **overrides: Any) -> CairnSettings:
    """Environment settings with the options a user gave on the command line on top."""
    given = {key: value for key, value in overrides.items() if value is not None}
    if home is not None:
        given["home"] = home
    return CairnSettings(**given)


def up(
    home: HomeOption = None,
    kafka: Annotated[
        str | None,
        typer.Option(
            "--kafka",
            help="Use this Kafka (host:port, comma-separated) instead of starting the embedded "
            "broker. Default: CAIRN_KAFKA_BOOTSTRAP_SERVERS.",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Object store URL: file:///abs/dir, s3://bucket or s3://bucket/prefix. "
            "Default: CAIRN_STORE_URL, else <home>/store.",
            show_default=False,
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(help="S3/MinIO endpoint URL (http://host:port). Default: CAIRN_S3_ENDPOINT."),
    ] = None,
    s3_access_key: Annotated[
        str | None, typer.Option(help="S3 access key. Default: CAIRN_S3_ACCESS_KEY.")
    ] = None,
    s3_secret_key: Annotated[
        str | None, typer.Option(help="S3 secret key. Default: CAIRN_S3_SECRET_KEY.")
    ] = None,
    services_path: Annotated[
        list[Path] | None,
        typer.Option(
            "--services-path",
            help="Extra folder scanned for services (repeatable), added to CAIRN_SERVICES_PATHS.",
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", help="Run only this service (repeatable). Default: every service found."
        ),
    ] = None,
    broker_port: Annotated[
        int | None,
        typer.Option(help="Port of the embedded broker. Default: a free port.", min=1, max=65535),
    ] = None,
    grace_period: Annotated[
        float,
        typer.Option(help="Seconds a service gets to stop after SIGTERM before SIGKILL.", min=0),
    ] = 15.0,
    broker_log: Annotated[
        str,
        typer.Option(
            "--broker-log",
            help="Where the embedded broker keeps events and consumer offsets: home "
            "(<home>/broker/, kept across `cairn down` / `cairn up`) or memory (gone on stop).",
        ),
    ] = "home",
) -> None:
    """Start the broker (unless --kafka), the topics and every service, in the foreground.

    Every service found (a folder with a `__main__.py` in `services` or CAIRN_SERVICES_PATHS)
    runs as its own process, logging to <home>/logs/. Each keeps the port it had on this home
    last time when that port is free; the embedded broker keeps its events under <home>/broker/.
    A dead service is restarted with backoff; Ctrl-C, SIGTERM or `cairn down` stops everything.
    On first start it makes an admin credential, printed once and saved in
    <home>/credentials.json (mode 0600), which the CLI and the SDK then use.
    """
    from cairn.runtime.supervisor import Supervisor, SupervisorOptions

    console = Console()
    if broker_log not in ("home", "memory"):
        raise typer.BadParameter(f"{broker_log!r} is not home or memory", param_hint="--broker-log")
    settings = _settings(
        home,
        kafka_bootstrap_servers=kafka,
        store_url=store,
        s3_endpoint=s3_endpoint,
        s3_access_key=s3_access_key,
        s3_secret_key=SecretStr(s3_secret_key) if s3_secret_key is not None else None,
    )
    if services_path:
        settings = settings.model_copy(
            update={"services_paths": [*settings.services_paths, *services_path]}
        )
    try:
        _extend_sys_path(settings)
        specs = _select(discover_services(settings), only)
        _warn_missing_libraries(console)
        ensure_credential(settings, console)
        supervisor = Supervisor(
            SupervisorOptions(
                settings=settings,
                services=specs,
                grace_period_s=grace_period,
                broker_port=broker_port,
                broker_log="memory" if broker_log == "memory" else "home",
            ),
            console=console,
        )
        asyncio.run(supervisor.run())
    except CairnError as exc:
        console.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _warn_missing_libraries(console: Console) -> None:
    """A slim install runs the services without their libraries: say which extra to add."""
    missing = missing_modules(PLATFORM_MODULES)
    if missing:
        console.print(
            f"[yellow]warning:[/] the services need {', '.join(missing)}, which this install "
            f"lacks; the ones that import them will not start: {escape(install_hint('platform'))}",
            highlight=False,
            soft_wrap=True,
        )


def _select(specs: list[ServiceSpec], only: list[str] | None) -> list[ServiceSpec]:
    """The services named by --only (all of them when it is not given)."""
    if not only:
        return specs
    known = {spec.name: spec for spec in specs}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ConfigError(
            f"no service named {', '.join(unknown)}; found: {', '.join(known) or 'none'}"
        )
    return [known[name] for name in dict.fromkeys(only)]


def _extend_sys_path(settings: CairnSettings) -> None:
    """Let this process import the extra services' modules (their event contracts)."""
    import sys

    for root in import_roots(settings):
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))


def running_state(home: Path) -> RuntimeState | None:
    """The state of the platform running on `home`, or None when none runs."""
    state = read_state(home)
    if state is None or not pid_alive(state.supervisor_pid):
        return None
    return state


def _observe(state: RuntimeState) -> RuntimeState:
    """The state with each service's status checked now (pid and /healthz)."""
    services = []
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        for service in state.services:
            observed: ServiceStatus = service.status
            if service.pid is None or not pid_alive(service.pid):
                observed = service.status if service.status == "backoff" else "stopped"
            else:
                try:
                    response = client.get(f"{service.url}/healthz")
                    health = response.json() if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    health = None
                healthy = answered_by(health, service.pid)
                if healthy:
                    observed = "healthy"
                elif service.status == "healthy":
                    observed = "unhealthy"
            services.append(service.model_copy(update={"status": observed}))
    return state.model_copy(update={"services": services})


def status(
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
) -> None:
    """Show what runs where: each service's PID, URL, health and restarts (exit 1 if down)."""
    settings = _settings(home)
    console = Console()
    state = running_state(settings.home.resolve())
    if state is None:
        if as_json:
            typer.echo(json.dumps({"running": False, "home": str(settings.home.resolve())}))
        else:
            console.print(f"Cairn is not running on {settings.home.resolve()}", highlight=False)
        raise typer.Exit(1)
    observed = _observe(state)
    pools = _worker_pools(observed)
    if as_json:
        typer.echo(
            json.dumps({"running": True, **observed.model_dump(mode="json"), "pools": pools})
        )
        return
    console.print(services_table(observed))
    if pools:
        from cairn_cli.pools_cmd import pools_table

        console.print(pools_table(pools))


def _worker_pools(state: RuntimeState) -> list[dict[str, Any]]:
    """The autoscaler's pools (replicas, lag, last decision) when it runs and answers."""
    from cairn_cli.pools_cmd import fetch_pools

    for service in state.services:
        if service.name == "autoscaler" and service.status == "healthy":
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                return fetch_pools(service.url, Path(state.home))
    return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kill_leftovers(state: RuntimeState) -> list[int]:
    """SIGKILL the processes a dead supervisor left, checking each pid is still ours."""
    killed = []
    candidates = [(service.pid, f"-m {service.module}") for service in state.services]
    candidates.append((state.broker_pid, " broker "))
    for pid, marker in candidates:
        if pid is None or not pid_alive(pid) or marker not in f"{_cmdline(pid)} ":
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def down(
    home: HomeOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a clean stop before killing.", min=1)
    ] = 60.0,
) -> None:
    """Stop the platform started by `cairn up` and wait until every process is gone."""
    settings = _settings(home)
    home_path = settings.home.resolve()
    console = Console()
    state = read_state(home_path)
    lock = HomeLock(home_path)
    supervisor_pid = state.supervisor_pid if state is not None else None
    if supervisor_pid is None and lock.is_held_elsewhere():
        supervisor_pid = lock.holder_pid()  # still starting: no state written yet
    if state is None and supervisor_pid is None:
        console.print(f"Cairn is not running on {home_path}", highlight=False)
        return
    if supervisor_pid is not None and pid_alive(supervisor_pid):
        os.kill(supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(supervisor_pid):
            console.print(f"[yellow]supervisor did not stop in {timeout:.0f}s; killing it[/]")
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor_pid, signal.SIGKILL)
    if state is not None:
        killed = _kill_leftovers(state)
        if killed:
            console.print(f"killed leftover processes: {', '.join(map(str, killed))}")
    remove_state(home_path)
    console.print(f"Cairn stopped on {home_path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `up`, `status` and `down` to the `cairn` app."""
    app.command("up")(up)
    app.command("status")(status)
    app.command("down")(down)
