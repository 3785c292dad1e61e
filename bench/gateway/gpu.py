"""Large CSV requests through the gateway with its GPU on and off: rows/s per device.

The gateway's own ASGI app runs in this process (the SageMaker fast path behind a real key; no
broker: the endpoint is applied directly, as an EndpointUpdated would). One XGBoost model
(run.py's: 200 trees, depth 6, 15 numeric features, binary) is trained here. Two gateways serve it:
`CAIRN_GATEWAY_GPU=auto` (the GPU when `cairn.gpu.gpu_status()` says one is usable) and `off`.
Each gets batches of `--rows` rows as one CSV request; every answer must match the CPU booster's
own predictions within `--tolerance` and carry the `X-Cairn-Device` expected (cuda for `auto`
where a GPU is usable, cpu otherwise), else the script exits 1. It prints, per gateway and
batch size, the device seen and rows/s end to end (CSV parse, predict, CSV answer) and of the
model's predict alone.

Usage (repo root, project venv):
    .venv/bin/python bench/gateway/gpu.py [--rows 10000,100000] [--repeats 5] [--json out.json]
Without a GPU it reports why none is usable and measures the CPU only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import xgboost
from cairn.artifacts.package import XGBoostModel
from cairn.auth.keys import issue_key
from cairn.auth.sealing import secret_box
from cairn.contracts.events import EndpointUpdated, VariantState
from cairn.gpu import gpu_status
from cairn.settings import CairnSettings
from cairn.store import InMemoryObjectStore, ObjectStore
from cryptography.fernet import Fernet

from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as gateway_bench  # bench/gateway/run.py: the same booster and model package

FEATURES = gateway_bench.FEATURES
ENDPOINT = "bench-gpu"
URI = "models/bench-gpu/"
MAX_BODY_BYTES = 512 * 1024 * 1024  # 100k rows of 15 features is ~17 MB of CSV


def make_model(store: ObjectStore, workdir: Path) -> xgboost.Booster:
    """run.py's booster, stored as a package; it predicts the expected answers on all cores."""
    booster, _, _, _ = gateway_bench.train(workdir)
    gateway_bench.package_booster(store, booster, URI)
    booster.set_param({"nthread": 0})
    return booster


class Served:
    """One in-process gateway (GPU `auto` or `off`) serving the benchmark endpoint."""

    def __init__(self, mode: str, settings: CairnSettings, store: ObjectStore, token: str):
        config = GatewaySettings(gpu=mode, max_body_bytes=MAX_BODY_BYTES, capture_sample_rate=0)
        self.mode = mode
        self.service = create_service(settings, store, config)
        self.gateway: Gateway = self.service.api.state.gateway
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.service.asgi),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
            timeout=600,
        )

    async def start(self) -> None:
        variant = VariantState(
            variant_name="main",
            model_package_group="bench",
            model_version=1,
            artifact_uri=URI,
            weight=1.0,
            instance_count=1,
        )
        update = EndpointUpdated(
            endpoint_name=ENDPOINT, revision=1, status="InService", production_variants=[variant]
        )
        await self.gateway.apply(update)

    def model(self) -> XGBoostModel:
        model = self.gateway.table.get(ENDPOINT).production[0].serving.model
        assert isinstance(model, XGBoostModel)
        return model

    async def invoke(self, body: bytes) -> tuple[npt.NDArray[np.float64], str]:
        response = await self.client.post(f"/endpoints/{ENDPOINT}/invocations", content=body)
        if response.status_code != 200:
            raise SystemExit(f"gpu={self.mode}: HTTP {response.status_code}: {response.text}")
        answer = np.loadtxt(response.text.splitlines(), dtype=np.float64, ndmin=1)
        return answer, response.headers.get("x-cairn-device", "(none)")

    async def close(self) -> None:
        await self.client.aclose()
        self.gateway.executor.shutdown(wait=False)


def rows_per_s(rows: int, seconds: list[float]) -> float:
    return rows / float(np.median(seconds))


async def measure(
    served: Served, rows: int, repeats: int, booster: xgboost.Booster, tolerance: float
) -> dict[str, Any]:
    rng = np.random.default_rng(rows)
    matrix = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    body = "\n".join(",".join(f"{v:.6g}" for v in row) for row in matrix).encode()
    sent = np.loadtxt(body.decode().splitlines(), delimiter=",", dtype=np.float32, ndmin=2)
    expected = booster.inplace_predict(sent)  # the CPU's answer, all cores
    answer, device = await served.invoke(body)  # warm-up (and the GPU's first transfer)
    worst = float(np.abs(answer - expected).max())
    end_to_end, model_only = [], []
    model = served.model()
    for _ in range(repeats):
        started = time.perf_counter()
        answer, seen = await served.invoke(body)
        end_to_end.append(time.perf_counter() - started)
        worst = max(worst, float(np.abs(answer - expected).max()))
        if seen != device:
            raise SystemExit(f"gpu={served.mode}: device changed from {device} to {seen}")
        started = time.perf_counter()
        model.predict_on(sent, device if device in model.devices else "cpu")
        model_only.append(time.perf_counter() - started)
    return {
        "gateway_gpu": served.mode,
        "rows": rows,
        "body_bytes": len(body),
        "device": device,
        "rows_per_s": round(rows_per_s(rows, end_to_end)),
        "model_rows_per_s": round(rows_per_s(rows, model_only)),
        "max_abs_diff": worst,
        "within_tolerance": worst <= tolerance,
    }


async def run(args: argparse.Namespace, home: Path) -> tuple[bool, dict[str, Any]]:
    """(failed, the results document)."""
    usable, detail = gpu_status()
    print(f"xgboost {xgboost.__version__}, GPU usable: {usable} ({detail})")
    store = InMemoryObjectStore()
    booster = make_model(store, home)
    settings = CairnSettings(
        home=home,
        platform_key=Fernet.generate_key().decode(),
        otel_exporter="none",
        kafka_bootstrap_servers="127.0.0.1:9",  # never reached: nothing here publishes
    )
    issued = issue_key(
        store,
        secret_box(settings),
        name="bench",
        scopes=["invoke"],
        created_by="bench",
        endpoints=[ENDPOINT],
    )
    rows_list = [int(value) for value in args.rows.split(",")]
    results, failed = [], False
    for mode in ("auto", "off"):
        served = Served(mode, settings, store, issued.token)
        await served.start()
        want = "cuda" if usable and mode == "auto" else "cpu"
        print(f"gateway gpu={mode}: model devices {list(served.model().devices)}")
        try:
            for rows in rows_list:
                if rows < served.gateway.gpu.min_rows:
                    print(f"  {rows} rows < gpu_min_rows {served.gateway.gpu.min_rows}: skipped")
                    continue
                result = await measure(served, rows, args.repeats, booster, args.tolerance)
                result["expected_device"] = want
                results.append(result)
                ok = result["within_tolerance"] and result["device"] == want
                failed |= not ok
                print(
                    f"  {rows:>7} rows  X-Cairn-Device {result['device']:<5} "
                    f"{result['rows_per_s']:>10,} rows/s end to end  "
                    f"{result['model_rows_per_s']:>11,} rows/s predict  "
                    f"max |diff| {result['max_abs_diff']:.2e}  {'ok' if ok else 'FAILED'}"
                )
        finally:
            await served.close()
    document = {
        "machine": platform.platform(),
        "xgboost": xgboost.__version__,
        "gpu_usable": usable,
        "gpu_detail": detail,
        "tolerance": args.tolerance,
        "results": results,
    }
    return failed, document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000", help="batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per batch size")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max |GPU - CPU|")
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-gpu-") as home:  # the key ring's home
        failed, document = asyncio.run(run(args, Path(home)))
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    if failed:
        print("FAILED: a wrong device or an answer outside the tolerance (see above)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
