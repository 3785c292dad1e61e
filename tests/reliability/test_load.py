"""Load: 200 concurrent clients invoke the demo's `credit-risk` endpoint for a bounded time.

Each client is its own HTTP connection (an httpx client with the demo's invoke-only key) and
sends one validation row at a time, back to back. Every answer must be a 200 carrying the same
prediction the endpoint gave that row before the load: zero errors. Latency (p50, p99),
requests per second and the gateway process's resident memory (before, peak while loaded,
after) are reported, never asserted: printed, written to `load-report.json` in the test's tmp
folder, and appended to `reliability-report.json` in `$CAIRN_RELIABILITY_REPORT_DIR` when set.
CI loads for 10 s; the long variant for 60 s:

    .venv/bin/pytest -m long tests/reliability/test_load.py -s

`CAIRN_LOAD_CLIENTS`, `CAIRN_LOAD_S` and `CAIRN_LOAD_LONG_S` change the clients and durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.reliability.report import append_report
from tests.support.demo_platform import DemoPlatform

pytestmark = pytest.mark.e2e

CLIENTS = int(os.environ.get("CAIRN_LOAD_CLIENTS", "200"))
CI_SECONDS = float(os.environ.get("CAIRN_LOAD_S", "10"))
LONG_SECONDS = float(os.environ.get("CAIRN_LOAD_LONG_S", "60"))
DISTINCT_ROWS = 64
# A hang guard per request, far above any healthy latency: past it the request is an error.
REQUEST_TIMEOUT_S = 30.0
RSS_SAMPLE_S = 0.25


@dataclass
class LoadRun:
    """What the clients saw: one latency per answered request, errors by kind."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    rss_kib: list[int] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.examples.setdefault(kind, detail[:300])


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A process's resident set (or `VmHWM`, its peak) from /proc, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for pid {pid}")


def gateway_pid(platform: DemoPlatform) -> int:
    status = platform.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    services = json.loads(status.stdout)["services"]
    pid = next(s["pid"] for s in services if s["name"] == "gateway")
    assert isinstance(pid, int), services
    return pid


def validation_lines(platform: DemoPlatform, count: int) -> list[str]:
    summary = platform.summary
    frame = pd.read_csv(summary["validation_csv"]).head(count)[summary["feature_columns"]]
    return [",".join(str(cell) for cell in row) for row in frame.itertuples(index=False)]


def http_client(platform: DemoPlatform, tls: ssl.SSLContext) -> httpx.AsyncClient:
    """One connection, as one client of the endpoint would hold it.

    Every client shares one TLS context: building one per client loads the CA bundle each time,
    seconds of CPU for 200 clients that the load would otherwise wait behind.
    """
    headers = {
        "Authorization": f"Bearer {platform.summary['bearer_token']}",
        "Content-Type": "text/csv",
    }
    return httpx.AsyncClient(
        base_url=platform.url("gateway"),
        headers=headers,
        timeout=REQUEST_TIMEOUT_S,
        verify=tls,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def baseline(platform: DemoPlatform, lines: list[str]) -> dict[str, float]:
    """Each row's prediction with the endpoint idle: what every answer under load must equal."""
    answers = {}
    async with http_client(platform, ssl.create_default_context()) as client:
        for line in lines:
            response = await client.post("/endpoints/credit-risk/invocations", content=line)
            assert response.status_code == 200, response.text
            answers[line] = float(response.text)
    assert answers[lines[0]] == pytest.approx(platform.summary["answers"]["csv"][0], rel=1e-6)
    return answers


async def one_client(
    client: httpx.AsyncClient,
    answers: dict[str, float],
    first: int,
    stop_at: float,
    run: LoadRun,
) -> None:
    """Send rows back to back until `stop_at`; record each answer's latency and any error."""
    lines = list(answers)
    sent = first
    while time.monotonic() < stop_at:
        line = lines[sent % len(lines)]
        sent += 1
        started = time.perf_counter()
        try:
            response = await client.post("/endpoints/credit-risk/invocations", content=line)
        except httpx.HTTPError as error:
            run.error(type(error).__name__, repr(error))
            continue
        run.latencies_s.append(time.perf_counter() - started)
        if response.status_code != 200:
            run.error(f"HTTP {response.status_code}", response.text)
            continue
        try:
            predicted = float(response.text)
        except ValueError:
            run.error("not a prediction", response.text)
            continue
        if not math.isclose(predicted, answers[line], rel_tol=1e-6):
            run.error("another row's prediction", f"{line} -> {predicted}")


async def sample_rss(pid: int, run: LoadRun) -> None:
    while True:
        run.rss_kib.append(rss_kib(pid))
        await asyncio.sleep(RSS_SAMPLE_S)


async def load(platform: DemoPlatform, clients: int, seconds: float) -> tuple[LoadRun, float]:
    """Run `clients` clients until `seconds` have passed; the run and its wall time."""
    answers = await baseline(platform, validation_lines(platform, DISTINCT_ROWS))
    pid = gateway_pid(platform)
    run = LoadRun()
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        pool = [await stack.enter_async_context(http_client(platform, tls)) for _ in range(clients)]
        sampler = asyncio.create_task(sample_rss(pid, run))
        started = time.monotonic()
        try:
            await asyncio.gather(
                *(
                    one_client(client, answers, index, started + seconds, run)
                    for index, client in enumerate(pool)
                )
            )
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        elapsed_s = time.monotonic() - started
    return run, elapsed_s


def figures(run: LoadRun, elapsed_s: float, clients: int, pid: int) -> dict[str, Any]:
    latencies_ms = np.array(run.latencies_s) * 1000
    return {
        "suite": "load",
        "endpoint": "credit-risk",
        "clients": clients,
        "duration_s": round(elapsed_s, 2),
        "requests": len(run.latencies_s),
        "errors": sum(run.errors.values()),
        "errors_by_kind": dict(run.errors),
        "requests_per_s": round(len(run.latencies_s) / elapsed_s, 1),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 2),
        "max_ms": round(float(latencies_ms.max()), 2),
        "gateway_pid": pid,
        "gateway_rss_mib": {
            "before": round(run.rss_kib[0] / 1024, 1),
            "peak_sampled": round(max(run.rss_kib) / 1024, 1),
            "after": round(rss_kib(pid) / 1024, 1),
            "process_peak": round(rss_kib(pid, "VmHWM") / 1024, 1),
        },
        "cores": os.cpu_count(),
    }


async def run_load(platform: DemoPlatform, seconds: float, tmp_path: Path, variant: str) -> None:
    run, elapsed_s = await load(platform, CLIENTS, seconds)
    report = {**figures(run, elapsed_s, CLIENTS, gateway_pid(platform)), "variant": variant}
    (tmp_path / "load-report.json").write_text(json.dumps(report, indent=2) + "\n")
    append_report(report)
    print(
        f"\nload: {CLIENTS} clients for {report['duration_s']} s: {report['requests']} requests, "
        f"{report['errors']} errors, {report['requests_per_s']} req/s, "
        f"p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms; gateway RSS "
        f"{report['gateway_rss_mib']}"
    )
    assert run.latencies_s, "no request was answered"
    assert not run.errors, f"{dict(run.errors)}; first of each: {run.examples}"


async def test_200_clients_get_only_correct_answers(
    demo_platform: DemoPlatform, tmp_path: Path
) -> None:
    await run_load(demo_platform, CI_SECONDS, tmp_path, "ci")


@pytest.mark.long
async def test_200_clients_get_only_correct_answers_for_a_minute(
    demo_platform: DemoPlatform, tmp_path: Path
) -> None:
    await run_load(demo_platform, LONG_SECONDS, tmp_path, "long")
