"""One `cairn up` + `cairn demo` shared by every e2e and reliability test that needs the demo.

Starting the platform and running the demo costs about a minute on two cores, so the tests that
only read from it (the golden path, batch transform, the load suite) share one session-scoped
platform. This plugin moves every test that uses it to the end of the run, and the ones
marked `restarts_platform` (the restart suite) last of all, so nothing runs against a platform
that another test took down, and the platform never idles while unrelated tests run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CAIRN = str(Path(sys.executable).with_name("cairn"))
SERVICES = [
    "ingest",
    "trainer",
    "registry",
    "deployer",
    "gateway",
    "batch",
    "pipelines",
    "monitor",  # the console's drift chart
    "console",  # the console's browser tests
]
DEMO_ARGS = ["--rows", "8000", "--num-round", "30", "--no-start", "--batch"]


def cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAIRN, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def all_healthy(env: dict[str, str]) -> dict[str, Any] | None:
    """`cairn status --json` once every demo service is healthy, else None."""
    state = json.loads(cli(env, "status", "--json").stdout or "{}")
    if not state.get("running"):
        return None
    statuses = {service["name"]: service["status"] for service in state["services"]}
    return state if all(statuses.get(name) == "healthy" for name in SERVICES) else None


@dataclass
class DemoPlatform:
    """The running platform, the demo's output and summary, and how to restart it."""

    home: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    demo: subprocess.CompletedProcess[str] | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        """`cairn up` for the demo services; returns once every one of them is healthy."""
        only = [arg for name in SERVICES for arg in ("--only", name)]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [CAIRN, "up", *only], env=self.env, stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 240  # a hang guard: a loaded 2-core machine is slow
        while (state := all_healthy(self.env)) is None:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"services not healthy:\n{self.log.read_text()}"
            time.sleep(0.3)
        self.state = state

    def stop(self) -> None:
        """`cairn down`; a supervisor that outlives it is killed, so no platform is left behind."""
        down = cli(self.env, "down", "--timeout", "20")
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        assert down.returncode == 0, down.stderr

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, service: str) -> str:
        """A service's URL from runtime.json (a wanted port may be taken; the runtime picks)."""
        return next(s["url"] for s in self.state["services"] if s["name"] == service)

    def cli(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return cli(self.env, *args, timeout_s=timeout_s)


@pytest.fixture(scope="session")
def demo_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoPlatform]:
    home = tmp_path_factory.mktemp("demo") / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAIRN_")}
    env.update(CAIRN_HOME=str(home), CAIRN_OTEL_EXPORTER="none")
    platform = DemoPlatform(home=home, env=env, log=home.parent / "up.log")
    try:
        platform.start()
        platform.demo = platform.cli("demo", *DEMO_ARGS, timeout_s=180)
        assert platform.demo.returncode == 0, platform.demo.stdout + platform.demo.stderr
        platform.summary = json.loads((home / "demo" / "summary.json").read_text())
        yield platform
    finally:
        platform.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the shared platform's users together at the end; its restart tests last of all."""

    def rank(item: pytest.Item) -> int:
        if "demo_platform" not in getattr(item, "fixturenames", ()):
            return 0
        return 2 if item.get_closest_marker("restarts_platform") else 1

    items.sort(key=rank)  # stable: the order within each rank is kept
