"""`cairn demo`: the credit-risk golden path, starting the embedded platform when none runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from cairn.cli.sdk_common import HomeOption, TargetOption, service_errors
from cairn.client import SERVICES, Client, service_urls
from cairn.errors import Unavailable
from cairn.settings import CairnSettings

DEMO_SERVICES = ("ingest", "trainer", "registry", "deployer", "gateway")
START_TIMEOUT_S = 90.0


def _uses_remote(target: str | None) -> bool:
    return bool(
        target
        or os.environ.get("CAIRN_TARGET")
        or any(os.environ.get(f"CAIRN_{name.upper()}_URL") for name in SERVICES)
    )


def _cairn_command() -> list[str]:
    script = Path(sys.executable).with_name("cairn")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cairn.cli import main; main()"]


def _start_platform(home: Path, console: Console) -> None:
    """`cairn up` for the demo's services, detached: it outlives this command."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "demo-up.log"
    only = [arg for name in DEMO_SERVICES for arg in ("--only", name)]
    console.print(
        f"No platform runs on {home}: starting one in the background "
        f"({', '.join(DEMO_SERVICES)}; log {log_path})",
        highlight=False,
    )
    with log_path.open("ab") as log:
        subprocess.Popen(
            [*_cairn_command(), "up", "--home", str(home), *only],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_healthy(home: Path, console: Console) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with (
        console.status("waiting for the services to be healthy..."),
        httpx.Client(timeout=1.0, trust_env=False) as http,
    ):
        while time.monotonic() < deadline:
            urls = service_urls(home=home, env={})
            if all(name in urls for name in DEMO_SERVICES):
                try:
                    if all(
                        http.get(f"{urls[name]}/healthz").status_code == 200
                        for name in DEMO_SERVICES
                    ):
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
    raise Unavailable(
        f"the platform did not become healthy in {START_TIMEOUT_S:.0f}s; see {home}/logs/"
    )


def demo(
    rows: Annotated[
        int, typer.Option("--rows", min=1000, max=5_000_000, help="Rows of synthetic data.")
    ] = 30_000,
    num_round: Annotated[
        int, typer.Option("--num-round", min=1, max=2000, help="XGBoost boosting rounds.")
    ] = 60,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data generator.")] = 7,
    kafka: Annotated[
        str | None,
        typer.Option(
            "--kafka", help="Kafka for the event trail (with --target).", show_default=False
        ),
    ] = None,
    start: Annotated[
        bool, typer.Option("--start/--no-start", help="Start the platform when none runs.")
    ] = True,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Credit risk end to end: data, XGBoost training, registry, approval, endpoint, HTTP calls.

    Runs against the platform on --home (starting it in the background if none runs, and leaving
    it running: stop it with `cairn down`), or against --target / CAIRN_<SERVICE>_URL (compose).
    """
    from cairn.cli.runtime_cmd import running_state
    from cairn.demo.flow import CreditRiskDemo, DemoOptions, EventTrail, trail_since, write_summary

    console = Console()
    settings = CairnSettings(home=home) if home is not None else CairnSettings()
    home_path = settings.home.resolve()
    bootstrap = kafka or settings.kafka_bootstrap_servers or None
    with service_errors():
        if _uses_remote(target):
            client = Client.from_env(target=target, home=home_path, timeout_s=60.0)
        else:
            state = running_state(home_path)
            if state is None:
                if not start:
                    raise Unavailable(f"Cairn is not running on {home_path}; run `cairn up`")
                _start_platform(home_path, console)
            _wait_healthy(home_path, console)
            state = running_state(home_path)
            if state is not None:
                bootstrap = bootstrap or state.kafka_bootstrap_servers
            client = Client.from_runtime(home_path, timeout_s=60.0)
        trail_settings = (
            settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
            if bootstrap
            else None
        )
        trail = EventTrail(trail_settings, set(), trail_since())
        trail.start()
        options = DemoOptions(
            rows=rows, num_round=num_round, seed=seed, work_dir=home_path / "demo"
        )
        try:
            with client:
                summary = CreditRiskDemo(client, console, options, trail).run()
        finally:
            trail.stop()
    summary_path = home_path / "demo" / "summary.json"
    write_summary(summary_path, summary)
    console.print(f"\n[dim]summary: {summary_path}[/]", highlight=False)
    if not _uses_remote(target):
        console.print(
            f"The platform keeps running on {home_path}; stop it with "
            f"[bold]cairn down --home {home_path}[/]",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Add `demo` to the `cairn` app."""
    app.command("demo")(demo)
