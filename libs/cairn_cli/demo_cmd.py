"""`cairn demo`: the credit-risk golden path, starting the embedded platform when none runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from cairn.errors import NotFound, Unavailable
from cairn.settings import CairnSettings
from cairn_sdk import SERVICES, Client, service_urls
from rich.console import Console

from cairn_cli.credential import ensure_credential
from cairn_cli.extras import DEMO_MODULES, require_modules
from cairn_cli.runtime_cmd import running_state
from cairn_cli.sdk_common import HomeOption, TargetOption, service_errors

if TYPE_CHECKING:
    from cairn_cli.demo.drift import DriftOptions

GOLDEN_SERVICES = ("ingest", "trainer", "registry", "deployer", "gateway")
DEMO_SERVICES = (*GOLDEN_SERVICES, "monitor")
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
    return [sys.executable, "-c", "from cairn_cli import main; main()"]


def _start_platform(home: Path, console: Console) -> None:
    """`cairn up` with every service, detached: it outlives this command.

    The whole platform, not only the demo's services, so that what the README shows next (the
    feature store, worker pools) works on the platform the demo leaves running.
    """
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "demo-up.log"
    console.print(
        f"No platform runs on {home}: starting one in the background (every service; "
        f"log {log_path})",
        highlight=False,
    )
    with log_path.open("ab") as log:
        subprocess.Popen(
            [*_cairn_command(), "up", "--home", str(home)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_healthy(home: Path, console: Console, required: tuple[str, ...]) -> dict[str, str]:
    """The URLs of the `required` services once each answers /healthz."""
    deadline = time.monotonic() + START_TIMEOUT_S
    missing: list[str] = list(required)
    with (
        console.status("waiting for the services to be healthy..."),
        httpx.Client(timeout=1.0, trust_env=False) as http,
    ):
        while time.monotonic() < deadline:
            urls = service_urls(home=home, env={})
            missing = [name for name in required if name not in urls]
            if urls and missing:
                break  # the platform runs without them: waiting will not bring them
            if not missing:
                try:
                    if all(
                        http.get(f"{urls[name]}/healthz").status_code == 200 for name in required
                    ):
                        return urls
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
    if missing:
        raise Unavailable(
            f"the platform on {home} runs without {', '.join(missing)}; stop it with "
            f"`cairn down --home {home}` and let the demo start it, or `cairn up` them all"
        )
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
    batch: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="Then score the whole validation set with explanations in a transform job.",
        ),
    ] = False,
    pipeline: Annotated[
        bool,
        typer.Option(
            "--pipeline",
            help="Then an event starts a user pipeline (process, train, evaluate, condition, "
            "register), and the same event again is served from the step cache.",
        ),
    ] = False,
    drift: Annotated[
        bool,
        typer.Option(
            "--drift",
            help="Then shift the traffic and watch drift -> retrain -> canary -> promoted.",
        ),
    ] = False,
    interval_s: Annotated[
        float, typer.Option("--interval-s", min=1, help="--drift: seconds between checks.")
    ] = 5.0,
    labelled_rows: Annotated[
        int,
        typer.Option("--labelled-rows", min=0, help="--drift: new labelled rows to retrain on."),
    ] = 5000,
    bake_s: Annotated[
        float, typer.Option("--bake-s", min=0, help="--drift: canary bake time in seconds.")
    ] = 10.0,
    drift_timeout_s: Annotated[
        float, typer.Option("--drift-timeout-s", min=10, help="--drift: give up after this.")
    ] = 180.0,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Credit risk end to end: data, XGBoost training, registry, approval, endpoint, HTTP calls.

    Runs against the platform on --home (starting it in the background if none runs, and leaving
    it running: stop it with `cairn down`), or against --target / CAIRN_<SERVICE>_URL (compose).
    With --batch it then scores the validation set in a batch transform job, each row joined with
    its probability and per-feature contributions. With --pipeline a published DatasetIngested
    starts a user pipeline, and the same event again is served from the step cache. With --drift
    it reuses the served credit model (running the golden path first when there is none) and
    closes the loop on the embedded platform: monitoring, retraining, canary, promotion.
    """
    with service_errors():
        require_modules("`cairn demo`", DEMO_MODULES, "platform")
    from cairn_cli.demo.drift import DriftOptions
    from cairn_cli.demo.flow import ENDPOINT

    console = Console()
    settings = CairnSettings(home=home) if home is not None else CairnSettings()
    settings = settings.model_copy(update={"home": settings.home.resolve()})
    drift_options = DriftOptions(
        interval_s=interval_s,
        min_new_labelled_rows=labelled_rows,
        bake_time_s=bake_s,
        timeout_s=drift_timeout_s,
    )
    with service_errors():
        remote = _uses_remote(target)
        link = (
            _remote_platform(settings, target, kafka)
            if remote
            else _local_platform(
                settings,
                kafka,
                start=start,
                needs=(*_needs(drift, batch), *(("pipelines",) if pipeline else ())),
                console=console,
            )
        )
        with link.client:
            if not drift or not _serves(link.client, ENDPOINT):
                summary = _golden_path(
                    link, settings, console, rows=rows, num_round=num_round, seed=seed
                )
                if batch:
                    _batch_step(link, settings, console, summary)
                if pipeline:
                    _pipeline_step(link, settings, console, summary)
            if drift:
                _drift_loop(link, settings, console, drift_options)
    if not remote:
        console.print(
            f"The platform keeps running on {settings.home}; stop it with "
            f"[bold]cairn down --home {settings.home}[/]",
            highlight=False,
        )


@dataclass
class _Link:
    """What the demo talks to: the services, the monitor, and Kafka for the event trail."""

    client: Client
    monitor_url: str | None
    trail_settings: CairnSettings | None
    store_url: str | None = None  # set on the embedded platform: the demo previews outputs


def _with_kafka(settings: CairnSettings, bootstrap: str | None) -> CairnSettings | None:
    if not bootstrap:
        return None
    return settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})


def _remote_platform(settings: CairnSettings, target: str | None, kafka: str | None) -> _Link:
    """--target / CAIRN_<SERVICE>_URL (compose, Kubernetes): credential from CAIRN_API_KEY."""
    client = Client.from_env(target=target, home=settings.home, timeout_s=60.0)
    bootstrap = kafka or settings.kafka_bootstrap_servers or None
    monitor_url = os.environ.get("CAIRN_MONITOR_URL")
    return _Link(client, monitor_url, _with_kafka(settings, bootstrap))


def _needs(drift: bool, batch: bool) -> tuple[str, ...]:
    """The services the chosen steps call."""
    return (*(DEMO_SERVICES if drift else GOLDEN_SERVICES), *(("batch",) if batch else ()))


def _local_platform(
    settings: CairnSettings,
    kafka: str | None,
    *,
    start: bool,
    needs: tuple[str, ...],
    console: Console,
) -> _Link:
    """The platform on the home: the admin credential first, then started if none runs."""
    home_path = settings.home
    state = running_state(home_path)
    if state is None and not start:
        raise Unavailable(f"Cairn is not running on {home_path}; run `cairn up`")
    ensure_credential(settings, console, state.store_url if state is not None else None)
    if state is None:
        _start_platform(home_path, console)
    urls = _wait_healthy(home_path, console, needs)
    state = running_state(home_path)
    bootstrap = kafka or settings.kafka_bootstrap_servers or None
    if state is not None:
        bootstrap = bootstrap or state.kafka_bootstrap_servers
    monitor_url = os.environ.get("CAIRN_MONITOR_URL") or urls.get("monitor")
    client = Client.from_runtime(home_path, timeout_s=60.0)
    store_url = state.store_url if state is not None else None
    return _Link(client, monitor_url, _with_kafka(settings, bootstrap), store_url)


def _golden_path(
    link: _Link, settings: CairnSettings, console: Console, *, rows: int, num_round: int, seed: int
) -> dict[str, Any]:
    """Data -> training -> registry -> approval -> endpoint -> invocations, with its events."""
    from cairn_cli.demo.flow import (
        CreditRiskDemo,
        DemoOptions,
        EventTrail,
        trail_since,
        write_summary,
    )

    work_dir = settings.home / "demo"
    trail = EventTrail(link.trail_settings, set(), trail_since())
    trail.start()
    options = DemoOptions(rows=rows, num_round=num_round, seed=seed, work_dir=work_dir)
    try:
        summary = CreditRiskDemo(link.client, console, options, trail).run()
    finally:
        trail.stop()
    write_summary(work_dir / "summary.json", summary)
    console.print(f"\n[dim]summary: {work_dir / 'summary.json'}[/]")
    return summary


def _batch_step(
    link: _Link, settings: CairnSettings, console: Console, summary: dict[str, Any]
) -> None:
    """The validation set scored with explanations by a transform job; added to the summary."""
    from cairn_cli.demo.batch import score_validation_set
    from cairn_cli.demo.flow import write_summary

    console.rule("[bold]Batch: score the whole validation set, with explanations", align="left")
    summary["batch"] = score_validation_set(link.client, console, summary, link.store_url)
    write_summary(settings.home / "demo" / "summary.json", summary)


def _pipeline_step(
    link: _Link, settings: CairnSettings, console: Console, summary: dict[str, Any]
) -> None:
    """An event starts a user pipeline; the same event again is served from the cache."""
    from cairn_cli.demo.flow import write_summary
    from cairn_cli.demo.pipeline import run_pipeline_step

    console.rule("[bold]Pipeline: an event starts a user workflow", align="left")
    summary["pipeline"] = run_pipeline_step(
        link.client, console, summary, link.trail_settings, link.store_url
    )
    write_summary(settings.home / "demo" / "summary.json", summary)


def _drift_loop(
    link: _Link, settings: CairnSettings, console: Console, options: DriftOptions
) -> None:
    """Shift the traffic and watch drift -> retrain -> canary -> promoted (exit 1 otherwise)."""
    from cairn_cli.demo.drift import DriftDemo
    from cairn_cli.demo.flow import write_summary

    if link.trail_settings is None or not link.monitor_url:
        raise Unavailable(
            "--drift needs the monitor and Kafka: run it on the embedded platform, "
            "or set CAIRN_MONITOR_URL and --kafka"
        )
    result = DriftDemo(link.client, console, link.monitor_url, link.trail_settings, options).run()
    path = settings.home / "demo" / "drift-summary.json"
    write_summary(path, result)
    console.print(f"\n[dim]summary: {path}[/]")
    if result["outcome"] != "promoted":
        raise typer.Exit(1)


def _serves(client: Client, endpoint_name: str) -> bool:
    """Whether the endpoint exists and is in service (the drift flow reuses it)."""
    try:
        return client.describe_endpoint(endpoint_name).get("status") == "InService"
    except NotFound:
        return False


def register(app: typer.Typer) -> None:
    """Add `demo` to the `cairn` app."""
    app.command("demo")(demo)
