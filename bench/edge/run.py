"""Edge benchmark: compiled single-row latency vs XGBoost in process, package size, rollout time.

    .venv/bin/python -m bench.edge.run [--agents 50] [--trees 100] [--features 20]

1. An XGBoost model (binary, depth 6) is packaged as treelite (gcc) and ONNX by the edge
   service's own packaging code; single-row latency is the median of 2,000 calls of
   `LoadedModel.predict` on one row, for the compiled library (ctypes), ONNX Runtime and XGBoost's
   `inplace_predict` (what the gateway runs).
2. The edge service runs on a real Tansu broker with a local store; N agents (threads of this
   process, each with its own folder) follow a plan canary(2) -> 50% -> 100% with no bake; the
   figure is the time from creating the plan to its Completed status.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import xgboost
from cairn.artifacts import (
    InputColumn,
    Lineage,
    ModelManifest,
    OutputColumn,
    Signature,
    load_model,
    write_model_package,
)
from cairn.contracts.state import ModelVersionView, write_state
from cairn.store import open_store
from cairn.store.base import ObjectStore
from cairn_edge.agent import Agent, AgentOptions, Credential
from cairn_edge.models import OnnxModel, TreeliteModel

from bench.autoscaler_reaction import start_tansu
from services.edge import packaging
from tests.support.auth import auth_settings, scoped_headers
from tests.support.http_server import served_in_thread


def make_model(store: ObjectStore, trees: int, features: int) -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, features)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 6}, xgboost.DMatrix(x, label=y), trees
    )
    manifest = ModelManifest(
        framework="xgboost",
        framework_version=xgboost.__version__,
        algorithm="xgboost",
        task="binary_classification",
        signature=Signature(
            inputs=[InputColumn(name=f"f{i}", dtype="float") for i in range(features)],
            outputs=[OutputColumn(name="probability")],
        ),
        lineage=Lineage(algorithm="xgboost"),
    )
    return write_model_package(
        store, "models/bench-edge/1/", manifest, {"model.ubj": booster.save_raw("ubj")}
    )


def latency_us(model: Any, rows: np.ndarray, calls: int = 2000) -> float:
    timings = []
    for index in range(calls):
        row = rows[index % len(rows)][None, :]
        started = time.perf_counter()
        model.predict(row)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def packaging_figures(store: ObjectStore, uri: str, features: int, workdir: Path) -> None:
    rows = np.random.default_rng(1).normal(size=(64, features)).astype(np.float32)
    original = load_model(store, uri)
    print(f"xgboost inplace_predict      {latency_us(original, rows):8.1f} us/row")
    for fmt in ("treelite", "onnx"):
        built = packaging.build(store, uri, fmt, "linux-x86_64", 1e-4, workdir / fmt)
        path = built.folder / built.model_file
        model = (
            TreeliteModel(original.manifest, path)
            if fmt == "treelite"
            else OnnxModel(original.manifest, path)
        )
        print(
            f"{fmt:<10} package {built.size_bytes:>9,} B  {latency_us(model, rows):8.1f} us/row"
            f"  max|err| {built.max_abs_error:.2g}"
        )
    print(f"native model file  {len(store.get_bytes(uri + 'model.ubj')):>9,} B")


def rollout_seconds(agents: int, trees: int, features: int, root: Path) -> float:
    from services.edge.app import create_service
    from services.edge.config import EdgeSettings

    broker, bootstrap = start_tansu()
    try:
        settings = auth_settings(
            kafka_bootstrap_servers=bootstrap,
            store_url=(root / "store").as_uri(),
            home=root / "home",
        )
        store = open_store(settings=settings)
        uri = make_model(store, trees, features)
        view = ModelVersionView(
            model_package_group="bench", version=1, artifact_uri=uri, approval_status="Approved"
        )
        write_state(store, view, "bench", "1")
        service = create_service(settings, store, EdgeSettings(sweep_interval_s=0.2))
        headers = scoped_headers(store, settings, ["admin"])
        with (
            served_in_thread(service.asgi, "edge") as url,
            httpx.Client(base_url=url, headers=headers, timeout=60) as api,
        ):
            api.post("/fleets", json={"fleet_name": "bench"}).raise_for_status()
            credentials = [
                Credential.model_validate(
                    api.post("/fleets/bench/devices", json={"device_name": f"a{i:02d}"}).json()
                )
                for i in range(agents)
            ]
            name = api.post(
                "/packages", json={"model_package_group": "bench", "model_version": 1}
            ).json()["package_name"]
            while api.get(f"/packages/{name}").json()["status"] == "InProgress":
                time.sleep(0.2)
            running = [
                Agent(
                    c,
                    AgentOptions(
                        server=url,
                        folder=root / "agents" / c.device_name,
                        capture_rate=0,
                        heartbeat_s=0.5,
                        upload_s=3600,
                        poll_wait_s=10,
                    ),
                )
                for c in credentials
            ]
            for agent in running:
                threading.Thread(target=agent.run, daemon=True).start()
            started = time.monotonic()
            api.post("/deployments", json={
                "plan_name": "bench", "fleet_name": "bench", "package_name": name,
                "stages": ["canary=devices:a00,a01", "half=percent:50", "rest=percent:100"],
                "bake_s": 0,
            }).raise_for_status()  # fmt: skip
            while (status := api.get("/deployments/bench").json()["status"]) == "InProgress":
                time.sleep(0.1)
            elapsed = time.monotonic() - started
            for agent in running:
                agent.stop.set()
            assert status == "Completed", status
            return elapsed
    finally:
        broker.terminate()
        broker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--features", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = open_store((root / "lat").as_uri())
        uri = make_model(store, args.trees, args.features)
        print(f"model: {args.trees} trees, depth 6, {args.features} features")
        packaging_figures(store, uri, args.features, root / "build")
        seconds = rollout_seconds(args.agents, args.trees, args.features, root / "rollout")
        print(
            f"rollout of {args.agents} agents (canary 2 -> 50% -> 100%, no bake): {seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
