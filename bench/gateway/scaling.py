"""Scaling per variant: 1 -> 2 gateway processes on this machine's cores, and the serverless cold
start.

Rows (written to bench/gateway/scaling.json, merged into nothing else):

- `processes`: the gateway as `python -m services.gateway` with the endpoint's variant at 1
  instance, then at 2 (the primary starts a second process on the same port, SO_REUSEPORT);
  req/s and latency at 32 connections with wrk (bench/gateway/run.py's model, request and wrk
  script), the load average and the CPU other processes took during each run.
- `cold_start`: the variant at 0 instances (a scaling policy with min_capacity 0 idled it): a
  fresh gateway process, then the time of its first answer (the request loads the model, then is
  answered), the server's own `cairn_gateway_cold_start_seconds`, and a warm request after it.
  Repeated `--cold-starts` times; medians reported.

Usage (repo root, project venv): .venv/bin/python bench/gateway/scaling.py [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench/gateway/run.py: the same model, request, wrk and processes

RESULTS = run.BENCH / "scaling.json"
COLD_TIMEOUT_S = 300.0


def set_instances(store_dir: Path, count: int) -> None:
    """Rewrite the deployer's stored endpoint with the variant at `count` instances."""
    from cairn.contracts.state import EndpointStateView, state_spec
    from cairn.store import open_store

    store = open_store(store_dir.resolve().as_uri())
    key = state_spec(EndpointStateView).key(run.ENDPOINT)
    document = json.loads(store.get_bytes(key))
    document["revision"] += 1
    for variant in document["production_variants"]:
        variant["instance_count"] = count
    store.put_bytes(key, json.dumps(document).encode())


def group_processes(group: int) -> int:
    """Processes in the gateway's process group (the primary and the ones it started)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{entry.name}/stat").read_text()
                if int(raw[raw.rindex(")") + 2 :].split()[2]) == group:
                    count += 1
    return count


def wait_for(what: str, check: Any, log: Path, timeout_s: float = run.START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} in {timeout_s:.0f}s: {log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def gateway(workdir: Path, token: str, row: str, processes: int) -> Iterator[Any]:
    """The gateway (and its broker) with the stored variant at `processes` instances."""
    with run.gateway(workdir, token, row) as (target, groups):
        log = workdir / "gateway.log"
        gateway_pid = next(g for g in groups if "services.gateway" in _cmdline(g))
        wait_for(
            f"{processes} gateway processes",
            lambda: (
                group_processes(gateway_pid) >= processes
                and log.read_text().count("loaded model") >= processes
            ),
            log,
        )
        yield target, groups


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def scaling_rows(
    wrk: str, workdir: Path, token: str, row: str, expected: float, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for count in (1, 2):
        set_instances(workdir / "store", count)
        with gateway(workdir, token, row, count) as (target, groups):
            run.check_answer(target, expected, row)
            target.label = f"{count} process(es)"
            run.run_wrk(wrk, target, 8, 3.0, groups)  # warm-up, discarded
            best = run.measure(wrk, target, 32, args.duration, groups, args.retries)
            rows.append({"processes": count, **asdict(best)})
    return rows


_COLD = re.compile(r'cairn_gateway_cold_start_seconds_sum\{endpoint="[^"]+"\} ([0-9.e+-]+)')


def post(url: str, body: str | bytes, headers: dict[str, str]) -> tuple[int, str]:
    """A request that may wait for a model load (run.http gives up after 10 s)."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=COLD_TIMEOUT_S) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def cold_start_rows(
    workdir: Path, token: str, row: str, expected: float, repeats: int
) -> list[dict[str, Any]]:
    set_instances(workdir / "store", 0)
    rows = []
    for _ in range(repeats):
        with run.gateway(workdir, token, row) as (target, _groups):
            started = time.perf_counter()
            status, text = post(target.url, target.body, target.headers)
            first_s = time.perf_counter() - started
            if status != 200 or abs(float(text.strip()) - expected) > 1e-5:
                raise RuntimeError(f"the cold start answered {status}: {text[:300]}")
            started = time.perf_counter()
            run.http(target.url, target.body, target.headers)
            warm_s = time.perf_counter() - started
            metrics_url = target.url.split("/endpoints/")[0] + "/metrics"
            _, metrics = run.http(metrics_url, headers=target.headers)
            found = _COLD.search(metrics)
            rows.append(
                {
                    "kind": "fresh process (imports, then the model)",
                    "first_answer_ms": round(first_s * 1000, 2),
                    "server_cold_start_ms": round(float(found[1]) * 1000, 2) if found else None,
                    "warm_request_ms": round(warm_s * 1000, 2),
                    "load1": round(os.getloadavg()[0], 2),
                }
            )
            print(f"  cold start: {rows[-1]}", flush=True)
            rows.extend(in_place(workdir, target, _groups, expected, repeats))
    return rows


def in_place(
    workdir: Path, target: Any, groups: set[int], expected: float, repeats: int
) -> list[dict[str, Any]]:
    """Cold starts of a running gateway: a revision at 0 instances unloads the model (as the
    deployer's scale-in does), then a request loads it again."""
    from cairn.contracts.events import EndpointUpdated
    from cairn.contracts.state import EndpointStateView, state_spec
    from cairn.store import open_store

    gateway_pid = next(g for g in groups if "services.gateway" in _cmdline(g))
    environ = Path(f"/proc/{gateway_pid}/environ").read_bytes().decode().split("\0")
    env = dict(line.split("=", 1) for line in environ if "=" in line)
    store = open_store((workdir / "store").resolve().as_uri())
    stored = json.loads(store.get_bytes(state_spec(EndpointStateView).key(run.ENDPOINT)))
    fields = ("endpoint_name", "revision", "status", "production_variants", "shadow_variant")
    log = workdir / "gateway.log"
    rows = []
    for index in range(repeats):
        update = EndpointUpdated.model_validate(
            {**{k: stored[k] for k in fields}, "revision": stored["revision"] + 1 + index}
        )
        asyncio.run(_announce(env["CAIRN_KAFKA_BOOTSTRAP_SERVERS"], workdir / "home", update))
        wait_for("the unload", partial(_unloaded, log, index + 1), log)
        started = time.perf_counter()
        status, text = post(target.url, target.body, target.headers)
        first_s = time.perf_counter() - started
        if status != 200 or abs(float(text.strip()) - expected) > 1e-5:
            raise RuntimeError(f"the cold start answered {status}: {text[:300]}")
        rows.append(
            {
                "kind": "running process (the model only)",
                "first_answer_ms": round(first_s * 1000, 2),
                "server_cold_start_ms": None,
                "warm_request_ms": None,
                "load1": round(os.getloadavg()[0], 2),
            }
        )
        print(f"  cold start: {rows[-1]}", flush=True)
    return rows


def _unloaded(log: Path, count: int) -> bool:
    return log.read_text().count("unloaded model") >= count


async def _announce(bootstrap: str, home: Path, update: Any) -> None:
    from cairn.bus import EventProducer
    from cairn.settings import CairnSettings

    settings = CairnSettings(home=home, kafka_bootstrap_servers=bootstrap, otel_exporter="none")
    async with EventProducer(settings, source="deployer") as producer:
        await producer.publish(update)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--skip-processes", action="store_true")
    args = parser.parse_args()
    wrk = run.require_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="cairn-bench-scaling-"))
    print(f"work directory {workdir}; load average {os.getloadavg()}; {os.cpu_count()} CPUs")
    processes: list[dict[str, Any]] = []
    cold: list[dict[str, Any]] = []
    try:
        booster, _, row, expected = run.train(workdir)
        token = run.write_cairn_store(workdir / "store", workdir / "home", booster)
        if not args.skip_processes:
            processes = scaling_rows(wrk, workdir, token, row, expected, args)
            write(processes, cold)  # kept if the cold starts fail
        cold = cold_start_rows(workdir, token, row, expected, args.cold_starts)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write(processes, cold)


def write(processes: list[dict[str, Any]], cold: list[dict[str, Any]]) -> None:
    """scaling.json; --skip-processes keeps the process rows of the last run."""
    if not processes and RESULTS.exists():
        processes = json.loads(RESULTS.read_text()).get("processes", [])
    summary: dict[str, Any] = {}
    if len(processes) == 2:
        summary["rps_2_over_1"] = round(processes[1]["rps"] / processes[0]["rps"], 2)
    if cold:
        for kind, label in (("fresh", "fresh_process"), ("running", "running_process")):
            times = [r["first_answer_ms"] for r in cold if r["kind"].startswith(kind)]
            if times:
                summary[f"cold_first_answer_ms_median_{label}"] = statistics.median(times)
        server = [r["server_cold_start_ms"] for r in cold if r["server_cold_start_ms"]]
        summary["server_cold_start_ms_median"] = statistics.median(server) if server else None
        warm = [r["warm_request_ms"] for r in cold if r["warm_request_ms"]]
        summary["warm_request_ms_median"] = statistics.median(warm) if warm else None
    results = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "processes": processes,
        "cold_start": cold,
        "summary": summary,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(summary, indent=2), flush=True)
    print(f"wrote {RESULTS.relative_to(run.REPO)}", flush=True)


if __name__ == "__main__":
    main()
