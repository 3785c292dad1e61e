"""Large requests and the GPU: which device serves a request, and how the answer says so.

Driven through the gateway's own ASGI app (the SageMaker fast path, /metrics and
/endpoints/{name}/models behind it) with a real model and real keys. This machine has no GPU, so
where a GPU must be usable, `gpu_status` says so and a stand-in for the CUDA booster predicts with
the real CPU booster, counting its calls; every CPU path is real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost
from cairn.artifacts import load_model
from cairn.artifacts.package import XGBoostModel
from cairn.contracts.events import EndpointUpdated, VariantState
from cairn.errors import InvalidInput
from cairn.store import InMemoryObjectStore, ObjectStore
from prometheus_client.parser import text_string_to_metric_families

import services.gateway.gpu as gateway_gpu
from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from tests.support.auth import auth_settings, scoped_headers
from tests.unit.test_gateway_payloads import ROWS, make_package

MIN_ROWS = 2048


class FakeCudaBooster:
    """Stands in for the booster copy on the GPU: the CPU booster's numbers, calls counted."""

    def __init__(self, booster: xgboost.Booster) -> None:
        self.booster = booster
        self.rows: list[int] = []

    def predict(self, dmatrix: xgboost.DMatrix) -> np.ndarray:
        self.rows.append(dmatrix.num_row())
        return self.booster.predict(dmatrix)


def csv_body(rows: int) -> str:
    return "\n".join(",".join(str(cell) for cell in ROWS[i % len(ROWS)]) for i in range(rows))


def expected(store: ObjectStore, uri: str, rows: int) -> list[float]:
    model = load_model(store, uri)
    return model.predict(model.encode_rows([ROWS[i % len(ROWS)] for i in range(rows)])).tolist()


def large_rows(scrape: str, device: str, endpoint: str) -> float:
    for family in text_string_to_metric_families(scrape):
        if family.name == "cairn_gateway_large_request_rows":
            for sample in family.samples:
                wanted = {"endpoint": endpoint, "device": device}
                if sample.name.endswith("_total") and wanted.items() <= sample.labels.items():
                    return sample.value
    return 0.0


class Served:
    """A gateway app with one XGBoost endpoint, and a client holding an invoke+read key."""

    def __init__(
        self, client: httpx.AsyncClient, gateway: Gateway, store: ObjectStore, uri: str, name: str
    ) -> None:
        self.client, self.gateway, self.store, self.uri, self.endpoint = (
            client, gateway, store, uri, name,
        )  # fmt: skip

    async def invoke(self, rows: int) -> httpx.Response:
        """A CSV request of `rows` rows, checked against the model's own predictions."""
        response = await self.client.post(
            f"/endpoints/{self.endpoint}/invocations",
            content=csv_body(rows),
            headers={"Content-Type": "text/csv"},
        )
        assert response.status_code == 200, response.text
        assert [float(line) for line in response.text.splitlines()] == pytest.approx(
            expected(self.store, self.uri, rows), abs=1e-6
        )
        return response


async def serve(tmp_path: Path, endpoint: str, config: GatewaySettings) -> AsyncIterator[Served]:
    store = InMemoryObjectStore()
    settings = auth_settings(home=tmp_path)
    uri = make_package(store, f"models/{endpoint}/", seed=4)
    service = create_service(settings, store, config)
    gateway: Gateway = service.api.state.gateway
    await gateway.apply(
        EndpointUpdated(
            endpoint_name=endpoint,
            revision=1,
            status="InService",
            production_variants=[
                VariantState(
                    variant_name="blue",
                    model_package_group="big",
                    model_version=1,
                    artifact_uri=uri,
                    weight=1.0,
                    instance_count=1,
                )
            ],
        )
    )
    headers = scoped_headers(store, settings, ["invoke", "read"])
    transport = httpx.ASGITransport(app=service.asgi)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=headers
    ) as client:
        yield Served(client, gateway, store, uri, endpoint)
    gateway.executor.shutdown(wait=False)


@pytest.fixture
async def on_cpu(tmp_path: Path) -> AsyncIterator[Served]:
    """This machine as it is: no GPU usable, default settings."""
    async for served in serve(tmp_path, "bigbatch-cpu", GatewaySettings()):
        yield served


@pytest.fixture
async def on_fake_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Served, list[FakeCudaBooster]]]:
    """A gateway told a GPU is usable; its XGBoost models get a stand-in CUDA booster."""
    fakes: list[FakeCudaBooster] = []
    use_gpu = XGBoostModel.use_gpu

    def fake_use_gpu(model: XGBoostModel, booster: Any = None) -> None:
        fakes.append(FakeCudaBooster(model.booster))
        use_gpu(model, fakes[-1])

    monkeypatch.setattr(gateway_gpu, "gpu_status", lambda: (True, "GPU 0: stand-in"))
    monkeypatch.setattr(XGBoostModel, "use_gpu", fake_use_gpu)
    async for served in serve(tmp_path, "bigbatch-gpu", GatewaySettings()):
        yield served, fakes


async def test_a_large_csv_request_on_this_machine_is_served_and_counted_on_the_cpu(
    on_cpu: Served,
):
    endpoint = on_cpu.endpoint
    assert on_cpu.gateway.gpu.min_rows == MIN_ROWS
    before = large_rows((await on_cpu.client.get("/metrics")).text, "cpu", endpoint)

    large = await on_cpu.invoke(MIN_ROWS + 5)
    assert large.headers["x-cairn-device"] == "cpu"
    small = await on_cpu.invoke(MIN_ROWS - 1)
    assert "x-cairn-device" not in small.headers  # small requests keep today's path

    scrape = (await on_cpu.client.get("/metrics")).text
    assert large_rows(scrape, "cpu", endpoint) - before == MIN_ROWS + 5
    assert large_rows(scrape, "cuda", endpoint) == 0
    models = (await on_cpu.client.get(f"/endpoints/{endpoint}/models")).json()
    assert models["gpu"]["usable"] is False and models["gpu"]["min_rows"] == MIN_ROWS
    assert models["models"][0]["devices"] == ["cpu"]


async def test_with_a_usable_gpu_only_large_requests_go_to_it(
    on_fake_gpu: tuple[Served, list[FakeCudaBooster]],
):
    served, fakes = on_fake_gpu
    (fake,) = fakes  # the one XGBoost model got its GPU booster at load time
    endpoint = served.endpoint

    small = await served.invoke(10)
    assert "x-cairn-device" not in small.headers
    assert fake.rows == []  # small requests stay on the CPU booster

    large = await served.invoke(MIN_ROWS)
    assert large.headers["x-cairn-device"] == "cuda"
    assert fake.rows == [MIN_ROWS]
    scrape = (await served.client.get("/metrics")).text
    assert large_rows(scrape, "cuda", endpoint) == MIN_ROWS
    models = (await served.client.get(f"/endpoints/{endpoint}/models")).json()
    assert models["gpu"] == {"usable": True, "detail": "GPU 0: stand-in", "min_rows": MIN_ROWS}
    assert models["models"][0]["devices"] == ["cpu", "cuda"]


def test_gpu_off_or_absent_loads_no_gpu_booster_and_predict_on_refuses_cuda(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(gateway_gpu, "gpu_status", lambda: (True, "GPU 0: stand-in"))
    off = gateway_gpu.GpuServing(GatewaySettings(gpu="off"), executor=None)  # type: ignore[arg-type]
    assert not off.usable and "off" in off.detail
    store = InMemoryObjectStore()
    uri = make_package(store, "models/off/")
    model = off.loader(load_model)(store, uri)
    assert isinstance(model, XGBoostModel) and model.devices == ("cpu",)
    matrix = model.encode_rows(ROWS)
    np.testing.assert_array_equal(model.predict_on(matrix, "cpu"), model.predict(matrix))
    with pytest.raises(InvalidInput, match="not 'cuda'"):
        model.predict_on(matrix, "cuda")
