"""Kill -9 batch workers mid-job, repeatedly: the output still holds every input record once.

    .venv/bin/python bench/batch/kill.py --rows 400000 --kills 5

The batch service and two workers run as separate processes on Tansu and a local store. While a
CSV job with a record id column runs, a worker is killed with SIGKILL after each newly completed
shard (the sentinel: the job's shard count moved) and replaced, `--kills` times; the last kill
takes the service itself (planner and assembler). At the end the assembled output's row count and
a checksum of its record ids (SHA-256 of the sorted ids) are compared with the input's. Figures
go to stdout, never asserted anywhere else.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from cairn.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.autoscaler_reaction import start_tansu
from bench.batch.run import FEATURES, make_model

REPO = Path(__file__).resolve().parents[2]
JOB = "kill-bench"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(env: dict[str, str], role: str, port: int, name: str) -> subprocess.Popen[bytes]:
    extra = {"CAIRN_BATCH_ROLE": role, "CAIRN_HTTP_PORT": str(port), "CAIRN_BATCH_WORKER_ID": name}
    return subprocess.Popen(
        [sys.executable, "-m", "services.batch"],
        env=env | extra,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def ids_checksum(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def describe(http: httpx.Client) -> dict[str, Any] | None:
    try:
        answer = http.get(f"/transform-jobs/{JOB}")
    except httpx.TransportError:
        return None  # the service is being replaced
    return dict(answer.json()) if answer.status_code == 200 else None


def wait_healthy(http: httpx.Client, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if http.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the batch service did not become healthy")


def main(rows: int, kills: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="cairn-bench-kill-"))
    broker, bootstrap = start_tansu()
    store_url = f"file://{folder / 'store'}"
    store = open_store(store_url)
    matrix = np.random.default_rng(1).normal(size=(rows, len(FEATURES))).astype(np.float32)
    make_model(store, matrix)
    ids = [f"r{i:08d}" for i in range(rows)]
    table = pa.table({"id": ids} | {n: matrix[:, i] for i, n in enumerate(FEATURES)})
    pacsv.write_csv(table, folder / "rows.csv", pacsv.WriteOptions(include_header=False))
    store.put_file("data/kill/rows.csv", folder / "rows.csv")

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")} | {
        "PYTHONPATH": str(REPO),
        "CAIRN_HOME": str(folder / "home"),
        "CAIRN_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CAIRN_STORE_URL": store_url,
        "CAIRN_AUTH_ENABLED": "false",
        "CAIRN_OTEL_EXPORTER": "none",
        "CAIRN_BUS_SESSION_TIMEOUT_MS": "1500",
        "CAIRN_BUS_HEARTBEAT_INTERVAL_MS": "200",
        "CAIRN_BATCH_PREDICT_THREADS": "1",
    }
    port = free_port()
    service = spawn(env, "all", port, "service")
    workers = [spawn(env, "worker", free_port(), f"worker-{n}") for n in range(2)]
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    killed: list[str] = []
    try:
        wait_healthy(http)
        body = {
            "job_name": JOB,
            "model_package_group": "bench",
            "model_version": 1,
            "transform_input": {"data_source": "data/kill/", "content_type": "text/csv"},
            "transform_output": {"output_path": "outputs/kill/"},
            "data_processing": {"input_filter": "$[1:]", "join_source": "Input"},
            "shard_size_mb": 1,
        }
        started = time.perf_counter()
        answer = http.post("/transform-jobs", json=body)
        assert answer.status_code == 202, answer.text
        seen, job = 0, describe(http)
        while job is None or job["status"] not in ("Completed", "Failed", "Stopped"):
            if job is not None and len(killed) < kills and job["shards_done"] > seen:
                seen = job["shards_done"]
                if len(killed) == kills - 1:
                    service.send_signal(signal.SIGKILL)
                    service.wait()
                    killed.append(f"service at shard {seen}/{job['shards_total']}")
                    service = spawn(env, "all", port, "service")
                    wait_healthy(http)
                    http.post("/transform-jobs", json=body)  # the same request resumes it
                else:
                    victim = workers.pop(0)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    killed.append(f"worker at shard {seen}/{job['shards_total']}")
                    workers.append(spawn(env, "worker", free_port(), f"worker-r{len(killed)}"))
            time.sleep(0.05)
            job = describe(http)
        wall = time.perf_counter() - started
        out = store.get_bytes("outputs/kill/rows.csv.out").decode().splitlines()
        out_ids = [line.split(",", 1)[0].strip('"') for line in out]  # pyarrow quotes strings
        print(f"rows={rows} shards={job['shards_total']} status={job['status']} wall={wall:.1f}s")
        for kill in killed:
            print(f"  kill -9 {kill}")
        print(f"input  rows={rows:,} ids sha256={ids_checksum(ids)[:16]}")
        print(f"output rows={len(out):,} ids sha256={ids_checksum(out_ids)[:16]}")
        same = len(out) == rows and ids_checksum(out_ids) == ids_checksum(ids)
        print("every record exactly once" if same else "MISMATCH: records lost or doubled")
    finally:
        http.close()
        for process in [service, *workers]:
            process.kill()
            process.wait()
        broker.kill()
        broker.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--kills", type=int, default=5)
    arguments = parser.parse_args()
    main(arguments.rows, arguments.kills)
