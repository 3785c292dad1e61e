"""Batch transform end to end vs the physical limit (issue 10's benchmark).

    .venv/bin/python bench/batch/run.py --rows 1000000

Data: ROWS x 15 numeric features; model: XGBoost, 200 trees. For Parquet -> Parquet and CSV -> CSV:
- anchor: one Python process reads the file with pyarrow, calls `booster.inplace_predict` on the
  whole table and writes the result (the physical limit on this machine);
- cairn: the batch service on Tansu + a local store, timed from the create request to the job's
  completion, with 1 worker (the service's own) and 2 (plus one `python -m services.batch` worker);
- CSV also with SingleRecord vs MultiRecord and with --explain (on a small file).
Figures go to stdout (never asserted anywhere).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import xgboost
from cairn.artifacts import (
    InputColumn,
    Lineage,
    ModelManifest,
    OutputColumn,
    Signature,
    write_model_package,
)
from cairn.contracts.state import ModelVersionView, write_state
from cairn.settings import CairnSettings
from cairn.store import open_store
from cairn.store.base import ObjectStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.autoscaler_reaction import start_tansu
from services.batch.app import create_service
from services.batch.config import BatchSettings

FEATURES = [f"f{i}" for i in range(15)]
REPO = Path(__file__).resolve().parents[2]


def make_data(rows: int, folder: Path) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(rows, 15)).astype(np.float32)
    table = pa.table({name: matrix[:, i] for i, name in enumerate(FEATURES)})
    parquet, csv = folder / "rows.parquet", folder / "rows.csv"
    pq.write_table(table, parquet, row_group_size=131_072)
    pacsv.write_csv(table, csv, pacsv.WriteOptions(include_header=False))
    return parquet, csv, matrix


def make_model(store: ObjectStore, matrix: np.ndarray) -> str:
    label = (matrix[:50_000, :3].sum(axis=1) + matrix[:50_000, 5] ** 2 > 1).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 6, "tree_method": "hist"},
        xgboost.DMatrix(matrix[:50_000], label=label),
        200,
    )
    manifest = ModelManifest(
        framework="xgboost",
        framework_version=xgboost.__version__,
        algorithm="xgboost",
        task="binary_classification",
        signature=Signature(
            inputs=[InputColumn(name=n, dtype="float") for n in FEATURES],
            outputs=[OutputColumn(name="probability")],
        ),
        lineage=Lineage(algorithm="xgboost"),
    )
    uri = write_model_package(
        store, "models/bench/1/", manifest, {"model.ubj": booster.save_raw("ubj")}
    )
    write_state(
        store,
        ModelVersionView(
            model_package_group="bench", version=1, artifact_uri=uri, approval_status="Approved"
        ),
        "bench",
        "1",
    )
    return uri


def anchor(path: Path, booster: xgboost.Booster, kind: str, out: Path) -> float:
    """Rows/s of read -> inplace_predict on everything -> write, in this one process."""
    started = time.perf_counter()
    if kind == "parquet":
        table = pq.read_table(path)
    else:
        table = pacsv.read_csv(path, pacsv.ReadOptions(column_names=FEATURES))
    matrix = np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float32)
    result = booster.inplace_predict(matrix)
    out_table = pa.table({"probability": result})
    if kind == "parquet":
        pq.write_table(out_table, out)
    else:
        pacsv.write_csv(out_table, out, pacsv.WriteOptions(include_header=False))
    return len(matrix) / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def batch_service(
    settings: CairnSettings, store: ObjectStore, threads: int
) -> AsyncIterator[Any]:
    service = create_service(
        settings, store, BatchSettings(predict_threads=threads, worker_id="main")
    )
    async with service.api.router.lifespan_context(service.api):
        yield service


def spawn_worker(settings: CairnSettings, threads: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ) | {
        "PYTHONPATH": str(REPO),
        "CAIRN_BATCH_ROLE": "worker",
        "CAIRN_BATCH_PREDICT_THREADS": str(threads),
        "CAIRN_HTTP_PORT": "0",
        "CAIRN_HOME": str(settings.home),
        "CAIRN_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CAIRN_STORE_URL": settings.store_url or "",
        "CAIRN_AUTH_ENABLED": "false",
        "CAIRN_OTEL_EXPORTER": "none",
        "CAIRN_BUS_SESSION_TIMEOUT_MS": "1500",
        "CAIRN_BUS_HEARTBEAT_INTERVAL_MS": "200",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.batch"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run_job(
    service: Any, name: str, source: str, content_type: str, **extra: Any
) -> dict[str, Any]:
    body = {
        "job_name": name,
        "model_package_group": "bench",
        "model_version": 1,
        "transform_input": {"data_source": source, "content_type": content_type},
        "transform_output": {"output_path": f"outputs/{name}"},
        "shard_size_mb": extra.pop("shard_size_mb", 16),
        **extra,
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.api), base_url="http://b"
    ) as client:
        started = time.perf_counter()
        answer = await client.post("/transform-jobs", json=body)
        assert answer.status_code == 202, answer.text
        while True:
            job = (await client.get(f"/transform-jobs/{name}")).json()
            if job["status"] in ("Completed", "Failed", "Stopped"):
                break
            await asyncio.sleep(0.05)
        job["wall_s"] = time.perf_counter() - started
        return dict(job)


async def main(rows: int, single_rows: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="cairn-bench-batch-"))
    broker, bootstrap = start_tansu()
    settings = CairnSettings(
        home=folder / "home",
        store_url=f"file://{folder / 'store'}",
        kafka_bootstrap_servers=bootstrap,
        auth_enabled=False,
        otel_exporter="none",
        bus_session_timeout_ms=1500,
        bus_heartbeat_interval_ms=200,
    )
    store = open_store(settings=settings)
    parquet, csv, matrix = make_data(rows, folder)
    make_model(store, matrix)
    booster = xgboost.Booster(model_file=str(folder / "store" / "models/bench/1/model.ubj"))
    store.put_file("data/bench/rows.parquet", parquet)
    store.put_file("data/bench/rows.csv", csv)
    pacsv.write_csv(
        pa.table({n: matrix[:single_rows, i] for i, n in enumerate(FEATURES)}),
        folder / "small.csv",
        pacsv.WriteOptions(include_header=False),
    )
    store.put_file("data/bench-small/small.csv", folder / "small.csv")
    print(f"rows={rows} features=15 trees=200 cores={os.cpu_count()}")
    limits = {
        kind: anchor(path, booster, kind, folder / f"anchor.{kind}")
        for kind, path in (("parquet", parquet), ("csv", csv))
    }
    for kind, rate in limits.items():
        print(f"anchor {kind}: {rate:,.0f} rows/s")
    cores = os.cpu_count() or 1
    try:
        async with batch_service(settings, store, cores) as service:
            for kind, source, ctype in (
                ("parquet", "data/bench/rows.parquet", "application/x-parquet"),
                ("csv", "data/bench/rows.csv", "text/csv"),
            ):
                job = await run_job(service, f"one-{kind}", source, ctype)
                rate = job["records_out"] / job["wall_s"]
                print(
                    f"cairn 1 worker {kind}: {rate:,.0f} rows/s "
                    f"({rate / limits[kind]:.0%} of anchor), "
                    f"{job['wall_s']:.2f}s, shards {job['shards_total']}, status {job['status']}"
                )
            # Exact TreeSHAP costs ~4 ms a row at 200 trees of depth 6 (XGBoost's own limit).
            job = await run_job(
                service, "explain-csv", "data/bench-small/", "text/csv", explain=True
            )
            rate = job["records_out"] / job["wall_s"]
            print(f"cairn 1 worker csv --explain ({single_rows} rows): {rate:,.0f} rows/s")
            for strategy in ("MultiRecord", "SingleRecord"):
                job = await run_job(
                    service,
                    f"small-{strategy.lower()}",
                    "data/bench-small/",
                    "text/csv",
                    batch_strategy=strategy,
                )
                rate = job["records_out"] / job["wall_s"]
                print(f"cairn {strategy} ({single_rows} rows): {rate:,.0f} rows/s")
        worker = spawn_worker(settings, 1)
        try:
            async with batch_service(settings, store, 1) as service:
                await asyncio.sleep(5)  # let the worker join the group
                for kind, source, ctype in (
                    ("parquet", "data/bench/rows.parquet", "application/x-parquet"),
                    ("csv", "data/bench/rows.csv", "text/csv"),
                ):
                    job = await run_job(service, f"two-{kind}", source, ctype, shard_size_mb=8)
                    rate = job["records_out"] / job["wall_s"]
                    print(
                        f"cairn 2 workers {kind}: {rate:,.0f} rows/s, {job['wall_s']:.2f}s, "
                        f"shards {job['shards_total']}"
                    )
        finally:
            worker.kill()
            worker.wait()
    finally:
        broker.kill()
        broker.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--single-rows", type=int, default=20_000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rows, arguments.single_rows))
