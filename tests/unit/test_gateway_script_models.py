"""Script packages served by a model-server process of their own, behind the real gateway.

The gateway is served in-process over ASGI (no broker: the stored endpoint state is loaded the
way the service's start-up loads it); each script package's `inference.py` runs in a separate
`model_server.py` process. A user function that raises, hangs or exits fails that request with a
ModelError; the gateway stays healthy and the next request is answered (by a restarted server
after a hang or an exit).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cairn.artifacts import (
    Lineage,
    ModelManifest,
    Signature,
    UnsupportedModelPackage,
    load_model,
    write_model_package,
)
from cairn.contracts.events import EndpointUpdated, VariantState
from cairn.contracts.state import EndpointStateView, state_spec
from cairn.service import Service
from cairn.store import InMemoryObjectStore, ObjectStore

from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from services.gateway.handlers import GatewayHandlers
from services.gateway.script_models import ScriptModel, ScriptModels
from tests.support.auth import auth_settings, scoped_headers

ENDPOINT = "scripted"
INVOKE = f"/endpoints/{ENDPOINT}/invocations"

# 2*x+1 with the factor read from model_dir; some inputs make the user code misbehave.
CUSTOM = """
import json, os, time

def model_fn(model_dir):
    with open(os.path.join(model_dir, "factor.txt")) as handle:
        return float(handle.read())

def input_fn(body, content_type):
    assert content_type == "application/json", content_type
    return json.loads(body)

def predict_fn(data, model):
    if data == "raise":
        raise ValueError("user code refuses this input")
    if data == "hang":
        time.sleep(3600)
    if data == "exit":
        os._exit(3)
    return [model * x + 1 for x in data]

def output_fn(prediction, accept):
    return json.dumps({"predictions": prediction}), "application/json"
"""

# Only model_fn: the toolkit's default input_fn, predict_fn (model.predict) and output_fn.
DEFAULTS = """
class Affine:
    def predict(self, x):
        return 2 * x + 1

def model_fn(model_dir):
    return Affine()
"""


def script_package(store: ObjectStore, prefix: str, files: dict[str, bytes]) -> str:
    manifest = ModelManifest(
        framework="script",
        framework_version="python3",
        algorithm="script",
        task="custom",
        signature=Signature(),
        lineage=Lineage(algorithm="script"),
    )
    return write_model_package(store, prefix, manifest, files)


def variant(name: str, uri: str, weight: float) -> VariantState:
    return VariantState(
        variant_name=name,
        model_package_group=ENDPOINT,
        model_version=1,
        artifact_uri=uri,
        weight=weight,
        instance_count=1,
    )


@pytest.fixture
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore()
    custom = script_package(
        store, "models/custom/", {"code/inference.py": CUSTOM.encode(), "factor.txt": b"2"}
    )
    defaults = script_package(store, "models/defaults/", {"inference.py": DEFAULTS.encode()})
    state = EndpointUpdated(
        endpoint_name=ENDPOINT,
        revision=1,
        status="InService",
        production_variants=[variant("custom", custom, 1.0), variant("defaults", defaults, 0.0)],
    )
    document = {**state.model_dump(mode="json"), "rollout": None}
    store.put_bytes(state_spec(EndpointStateView).key(ENDPOINT), json.dumps(document).encode())
    return store


@pytest.fixture
async def service(tmp_path: Path, store: InMemoryObjectStore) -> AsyncIterator[Service]:
    config = GatewaySettings(capture_sample_rate=0, script_invocation_timeout_s=1.0)
    service = create_service(auth_settings(home=tmp_path), store, config)
    gateway: Gateway = service.api.state.gateway
    handlers = GatewayHandlers(gateway, store, service.publish)
    await handlers.load_stored_endpoints()
    yield service
    await handlers.close(gateway)
    assert not gateway.scripts.models  # every model server stopped, its files removed


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service.asgi)
    headers = scoped_headers(service.store, service.settings, ["invoke"])
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway.test", headers=headers, timeout=60
    ) as client:
        yield client


def script_model(service: Service, name: str) -> ScriptModel:
    gateway: Gateway = service.api.state.gateway
    model = gateway.table.get(ENDPOINT).variants[name].serving.model
    assert isinstance(model, ScriptModel)
    return model


async def call(client: httpx.AsyncClient, body: object, **headers: str) -> httpx.Response:
    return await client.post(
        INVOKE, content=json.dumps(body), headers={"Content-Type": "application/json", **headers}
    )


async def test_user_inference_code_answers_and_its_failures_are_model_errors(
    service: Service, client: httpx.AsyncClient
) -> None:
    model = script_model(service, "custom")
    assert model.process is None  # started by the first request, not at load
    answer = await call(client, [1, 2.5])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [3.0, 6.0]}
    assert answer.headers["x-amzn-invoked-production-variant"] == "custom"
    assert model.process is not None and model.process.pid != service_pid()

    refused = await call(client, "raise")
    assert refused.status_code == 424
    assert refused.headers["x-amzn-errortype"] == "ModelError"
    assert "ValueError: user code refuses this input" in refused.json()["OriginalMessage"]
    assert refused.json()["OriginalStatusCode"] == 500
    assert (await call(client, [0])).json() == {"predictions": [1.0]}
    assert model.starts == 1  # a raising handler does not cost the server

    first_pid = model.process.pid
    hung = await call(client, "hang")  # the 1 s invocation timeout answers it
    assert hung.status_code == 424 and "did not answer within 1 s" in hung.json()["message"]
    assert (await call(client, [10])).json() == {"predictions": [21.0]}
    assert model.starts == 2 and model.process.pid != first_pid

    died = await call(client, "exit")
    assert died.status_code == 424 and "died while answering" in died.json()["message"]
    assert (await call(client, [-1])).json() == {"predictions": [-1.0]}
    assert model.starts == 3
    assert (await client.get("/ping")).json() == {"status": "Healthy"}


async def test_the_toolkits_default_handlers_decode_json_csv_and_refuse_the_rest(
    service: Service, client: httpx.AsyncClient
) -> None:
    target = {"X-Amzn-SageMaker-Target-Variant": "defaults"}
    assert (await call(client, [[1, 2], [3, 4]], **target)).json() == [[3, 5], [7, 9]]
    csv = await client.post(
        INVOKE, content=b"1,2\n3,4\n", headers={"Content-Type": "text/csv", **target}
    )
    assert csv.status_code == 200 and csv.json() == [[3.0, 5.0], [7.0, 9.0]]
    as_csv = await call(client, [1, 2], Accept="text/csv", **target)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text.split() == ["3", "5"]
    unknown = await client.post(
        INVOKE, content=b"x", headers={"Content-Type": "application/x-thing", **target}
    )
    assert unknown.status_code == 424 and unknown.json()["OriginalStatusCode"] == 415
    tensor = {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}
    v2 = await client.post(
        f"/v2/models/{ENDPOINT}/versions/defaults/infer", json={"inputs": [tensor]}
    )
    assert v2.status_code == 400 and "SageMaker invocations only" in v2.text


def test_a_script_package_needs_inference_code_and_load_model_still_refuses_it(
    tmp_path: Path,
) -> None:
    store = InMemoryObjectStore()
    uri = script_package(store, "models/no-code/", {"model.bin": b"weights"})
    scripts = ScriptModels(start_timeout_s=5, timeout_s=5)
    with pytest.raises(UnsupportedModelPackage, match=r"no code/inference\.py or inference\.py"):
        scripts.load(store, uri)
    with pytest.raises(UnsupportedModelPackage, match="script packages cannot be served"):
        load_model(store, uri)  # batch and the other in-process callers never run user code


def service_pid() -> int:
    import os

    return os.getpid()
