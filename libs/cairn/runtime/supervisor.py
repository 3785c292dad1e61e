"""`cairn up`: the broker, the catalogue topics and every service as its own supervised process.

Order of start: lock the home, the broker (embedded unless one is given, its log kept under
<home>/broker/), the topics, the services.
Order of stop: every service gets SIGTERM, then SIGKILL after the grace period, the broker last.
A dead service comes back after an exponential backoff; one that stays unhealthy is killed first.
A service is healthy when its own process answers `/healthz` (the answer names its pid); one whose
port another process took comes back on a free port, recorded in ports.json and runtime.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import httpx
from rich.console import Console
from rich.live import Live

from cairn.contracts.catalogue import load_contract_modules
from cairn.runtime.backoff import RestartPolicy, RestartTracker
from cairn.runtime.blobstore import BrokerLogServer
from cairn.runtime.broker import EmbeddedBroker
from cairn.runtime.discovery import ServiceSpec
from cairn.runtime.display import service_line, services_table
from cairn.runtime.ports import BROKER, can_bind, pick_port, read_ports, remember_ports
from cairn.runtime.state import (
    HomeLock,
    RuntimeState,
    ServiceState,
    ServiceStatus,
    answered_by,
    remove_state,
    write_state,
)
from cairn.settings import CairnSettings

logger = logging.getLogger("cairn.runtime")

TICK_S = 0.5
HEALTH_TIMEOUT_S = 1.0


@dataclass
class SupervisorOptions:
    """How `cairn up` runs: the settings every child inherits and the supervision knobs."""

    settings: CairnSettings
    services: list[ServiceSpec]
    grace_period_s: float = 10.0
    broker_port: int | None = None
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    unhealthy_kill_after_s: float = 60.0
    python: str = sys.executable
    # "home": the embedded broker's log and offsets persist under <home>/broker/;
    # "memory": Tansu's memory engine (every event is gone when it stops).
    broker_log: Literal["home", "memory"] = "home"


@dataclass
class _Managed:
    """One service process and what the supervisor remembers about it."""

    spec: ServiceSpec
    port: int
    url: str
    log_path: Path
    tracker: RestartTracker
    process: subprocess.Popen[bytes] | None = None
    log_handle: IO[bytes] | None = None
    status: ServiceStatus = "starting"
    restarts: int = 0
    started_at: datetime | None = None
    started_monotonic: float = 0.0
    restart_at: float | None = None
    unhealthy_since: float | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def to_state(self) -> ServiceState:
        return ServiceState(
            name=self.spec.name,
            module=self.spec.module,
            pid=self.process.pid if self.alive() and self.process is not None else None,
            port=self.port,
            url=self.url,
            status=self.status,
            restarts=self.restarts,
            started_at=self.started_at if self.alive() else None,
            log_path=str(self.log_path),
        )


class Supervisor:
    """Runs the whole embedded platform in the foreground until SIGINT/SIGTERM."""

    def __init__(self, options: SupervisorOptions, console: Console | None = None) -> None:
        self.options = options
        self.settings = options.settings
        self.home = options.settings.home.resolve()
        self.logs = self.home / "logs"
        self.console = console or Console()
        self.store_url = options.settings.resolved_store_url()
        self.broker: EmbeddedBroker | None = None
        self.broker_log: BrokerLogServer | None = None
        self.bootstrap_servers = options.settings.kafka_bootstrap_servers
        self.services: list[_Managed] = []
        self.started_at = datetime.now(UTC)
        self._stop = asyncio.Event()
        self._lock = HomeLock(self.home)
        self._last_written = ""
        self._last_lines: dict[str, str] = {}

    # Life cycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything, supervise until asked to stop, then stop everything.

        Raises:
            Conflict: another `cairn up` runs on the same home.
            Unavailable: the broker could not be started or reached.
        """
        self._lock.acquire()
        try:
            self._install_signal_handlers()
            await self._start_platform()
            await self._supervise()
        finally:
            await self._shutdown()
            self._lock.release()

    def request_stop(self) -> None:
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop)

    async def _start_platform(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        remembered = read_ports(self.home)
        if not self.bootstrap_servers:
            broker_port = self.options.broker_port or pick_port("127.0.0.1", remembered.get(BROKER))
            self.broker = self._embedded_broker(broker_port)
            await asyncio.to_thread(self.broker.start)
            self.bootstrap_servers = self.broker.bootstrap_servers
            remember_ports(self.home, {BROKER: self.broker.port})
            kept = f"log in {self.broker_log.root}" if self.broker_log else "log in memory"
            self._say(
                f"broker: embedded Tansu at {self.bootstrap_servers} (pid {self.broker.pid}, "
                f"{kept})"
            )
        else:
            self._say(f"broker: external at {self.bootstrap_servers}")
        self._say(f"store: {self.store_url}")
        await self._ensure_topics()
        for spec in self.options.services:
            # The port this service had on this home last time, else the one it declares.
            port = pick_port(self.probe_host, remembered.get(spec.name), spec.preferred_port)
            self.services.append(
                _Managed(
                    spec=spec,
                    port=port,
                    url=f"http://{self.probe_host}:{port}",
                    log_path=self.logs / f"{spec.name}.log",
                    tracker=RestartTracker(self.options.restart_policy),
                )
            )
        if not self.services:
            self._say("no services found (installed `services` package, CAIRN_SERVICES_PATHS)")
        remember_ports(self.home, {managed.spec.name: managed.port for managed in self.services})
        for managed in self.services:
            self._spawn(managed)
        self._write_state()

    @property
    def probe_host(self) -> str:
        """Where the services answer, as the supervisor and clients reach them."""
        host = self.settings.http_host
        return "127.0.0.1" if host in ("0.0.0.0", "") else host

    def _embedded_broker(self, port: int) -> EmbeddedBroker:
        """Tansu on `port`, its log on disk in the home unless the options say memory."""
        if self.options.broker_log == "memory":
            return EmbeddedBroker(log_path=self.logs / "broker.log", port=port)
        self.broker_log = BrokerLogServer(self.home / "broker")
        self.broker_log.start()
        return EmbeddedBroker(
            log_path=self.logs / "broker.log",
            port=port,
            storage_engine=self.broker_log.storage_engine,
            env=self.broker_log.broker_env(),
        )

    async def _ensure_topics(self) -> None:
        from cairn.bus import ensure_topics

        load_contract_modules(self.settings.contract_modules)
        settings = self.settings.model_copy(
            update={"kafka_bootstrap_servers": self.bootstrap_servers}
        )
        await ensure_topics(settings)

    def _child_env(self, managed: _Managed) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CAIRN_HOME=str(self.home),
            CAIRN_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap_servers,
            CAIRN_STORE_URL=self.store_url,
            CAIRN_HTTP_HOST=self.settings.http_host,
            CAIRN_HTTP_PORT=str(managed.port),
            PYTHONUNBUFFERED="1",
        )
        if self.settings.s3_endpoint:
            env["CAIRN_S3_ENDPOINT"] = self.settings.s3_endpoint
        if self.settings.s3_access_key:
            env["CAIRN_S3_ACCESS_KEY"] = self.settings.s3_access_key
        if self.settings.s3_secret_key is not None:
            env["CAIRN_S3_SECRET_KEY"] = self.settings.s3_secret_key.get_secret_value()
        if managed.spec.pythonpath is not None:
            existing = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join(
                [str(managed.spec.pythonpath), *([existing] if existing else [])]
            )
        return env

    def _spawn(self, managed: _Managed) -> None:
        if managed.log_handle is None:
            managed.log_handle = managed.log_path.open("ab")
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        managed.log_handle.write(f"--- cairn: starting {managed.spec.module} at {stamp}\n".encode())
        managed.log_handle.flush()
        # A session of its own: Ctrl-C in the terminal reaches only the supervisor, which then
        # stops the children in order.
        managed.process = subprocess.Popen(
            managed.spec.command(self.options.python),
            env=self._child_env(managed),
            stdout=managed.log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        managed.status = "starting"
        managed.started_at = datetime.now(UTC)
        managed.started_monotonic = time.monotonic()
        managed.restart_at = None
        managed.unhealthy_since = None
        logger.info(
            "started %s pid=%s port=%s", managed.spec.name, managed.process.pid, managed.port
        )

    # Supervision ------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        live = self._live()
        with live if live is not None else contextlib.nullcontext():
            async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S, trust_env=False) as client:
                while not self._stop.is_set():
                    await self._tick(client)
                    self._write_state()
                    self._render(live)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), timeout=TICK_S)

    async def _tick(self, client: httpx.AsyncClient) -> None:
        now = time.monotonic()
        await self._check_broker()
        for managed in self.services:
            if managed.status == "backoff":
                if managed.restart_at is not None and now >= managed.restart_at:
                    managed.restarts += 1
                    self._keep_or_move_port(managed)
                    self._spawn(managed)
                continue
            if managed.process is not None and managed.process.poll() is not None:
                code = managed.process.returncode
                managed.restart_at = managed.tracker.record_exit(now)
                managed.status = "backoff"
                self._say(
                    f"{managed.spec.name} exited with code {code}; restarting in "
                    f"{managed.restart_at - now:.1f}s (log: {managed.log_path})"
                )
        running = [managed for managed in self.services if managed.alive()]
        results = await asyncio.gather(*(self._healthy(client, managed) for managed in running))
        for managed, healthy in zip(running, results, strict=True):
            self._apply_health(managed, healthy, now)

    def _keep_or_move_port(self, managed: _Managed) -> None:
        """Keep the service's port when it is free; when another process took it (the service
        would crash-loop on it), move the service to a free port and remember that one."""
        if can_bind(self.probe_host, managed.port):
            return
        port = pick_port(self.probe_host)
        self._say(
            f"{managed.spec.name}: port {managed.port} is taken by another process; "
            f"starting it on port {port}"
        )
        managed.port, managed.url = port, f"http://{self.probe_host}:{port}"
        remember_ports(self.home, {managed.spec.name: port})

    async def _healthy(self, client: httpx.AsyncClient, managed: _Managed) -> bool:
        """Whether the service's own process answers (not another one holding its port)."""
        try:
            response = await client.get(f"{managed.url}/healthz")
            health = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return False
        return managed.process is not None and answered_by(health, managed.process.pid)

    def _apply_health(self, managed: _Managed, healthy: bool, now: float) -> None:
        if healthy:
            managed.status = "healthy"
            managed.unhealthy_since = None
            managed.tracker.mark_healthy(now)
            return
        managed.tracker.mark_unhealthy()
        if managed.status == "healthy":
            managed.status = "unhealthy"
        if managed.unhealthy_since is None:
            managed.unhealthy_since = now
        # A hung process (never healthy, or no longer) is killed; the exit path restarts it.
        if now - managed.unhealthy_since >= self.options.unhealthy_kill_after_s:
            self._say(
                f"{managed.spec.name} unhealthy for {self.options.unhealthy_kill_after_s:.0f}s; "
                "killing it"
            )
            self._signal(managed, signal.SIGKILL)

    async def _check_broker(self) -> None:
        broker = self.broker
        if broker is None or broker.alive():
            return
        # Services reconnect to the same address; the log is back when it lives in the home.
        lost = "" if self.broker_log is not None else " (its log is lost)"
        self._say(f"embedded broker died; restarting it on the same port{lost}")
        broker.stop()
        await asyncio.to_thread(broker.start)
        await self._ensure_topics()

    # Stop -------------------------------------------------------------------------------------

    def _signal(self, managed: _Managed, signum: signal.Signals) -> None:
        if managed.process is None or managed.process.poll() is not None:
            return
        # Each child leads its own process group, so workers it forked get the signal too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(managed.process.pid, signum)

    async def _shutdown(self) -> None:
        for managed in self.services:
            managed.status = "stopping"
            self._signal(managed, signal.SIGTERM)
        if self.services:
            self._say(f"stopping {len(self.services)} service(s)")
            self._write_state()
        deadline = time.monotonic() + self.options.grace_period_s
        for managed in self.services:
            if managed.process is not None:
                remaining = max(deadline - time.monotonic(), 0.0)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(managed.process.wait, remaining)
        for managed in self.services:
            if managed.alive():
                self._say(f"{managed.spec.name} did not stop in time; killing it")
            self._signal(managed, signal.SIGKILL)
            if managed.process is not None:
                await asyncio.to_thread(managed.process.wait)
            managed.status = "stopped"
            if managed.log_handle is not None:
                managed.log_handle.close()
                managed.log_handle = None
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        if self.broker_log is not None:
            await asyncio.to_thread(self.broker_log.stop)
        remove_state(self.home)
        self._say("stopped")

    # State and display ------------------------------------------------------------------------

    def state(self) -> RuntimeState:
        return RuntimeState(
            supervisor_pid=os.getpid(),
            started_at=self.started_at,
            home=str(self.home),
            kafka_bootstrap_servers=self.bootstrap_servers,
            broker_embedded=self.broker is not None,
            broker_pid=self.broker.pid if self.broker is not None else None,
            store_url=self.store_url,
            services=[managed.to_state() for managed in self.services],
        )

    def _write_state(self) -> None:
        state = self.state()
        serialized = state.model_dump_json()
        if serialized != self._last_written:
            write_state(self.home, state)
            self._last_written = serialized

    def _live(self) -> Live | None:
        if not self.console.is_terminal:
            return None
        return Live(services_table(self.state()), console=self.console, refresh_per_second=2)

    def _render(self, live: Live | None) -> None:
        if live is not None:
            live.update(services_table(self.state()))
            return
        for service in self.state().services:
            line = service_line(service)
            key = f"{service.status}:{service.pid}:{service.restarts}"
            if self._last_lines.get(service.name) != key:
                self._last_lines[service.name] = key
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _say(self, message: str) -> None:
        logger.info(message)
        self.console.print(f"[bold]cairn[/]: {message}", highlight=False, soft_wrap=True)
