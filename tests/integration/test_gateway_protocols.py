"""Standard clients unchanged against a real gateway: tritonclient, KServe v1, boto3's errors.

One uvicorn server on a loopback port (real Tansu broker and moto S3 store, as the gateway runs):
tritonclient.http at its defaults (binary tensors both ways) and in JSON mode answering the JSON
path's numbers, malformed binary bodies refused with 400 and their reason, the KServe v1
protocol, SageMaker's error codes as boto3 raises them, and multi-model endpoints through the
SDK and the CLI (`--target-model`, `cairn endpoints models`).
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from botocore.exceptions import ClientError
from cairn.artifacts import load_model
from cairn.contracts.state import EndpointStateView, state_spec
from cairn.errors import InvalidInput
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from cairn_cli import app
from cairn_sdk import Client
from typer.testing import CliRunner

from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from tests.integration.test_gateway_http import revision, runtime_client
from tests.support.auth import auth_settings, token_for
from tests.support.http_server import served_in_thread
from tests.unit.test_gateway_payloads import ROWS, make_package

pytestmark = pytest.mark.integration

WAIT_S = 20.0
ENDPOINT = "credit"
CSV_BODY = "\n".join(",".join(str(cell) for cell in row) for row in ROWS)
COLUMNS = list(zip(*ROWS, strict=True))


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> CairnSettings:
    return auth_settings(
        home=tmp_path_factory.mktemp("gateway-protocols-home"),
        kafka_bootstrap_servers=kafka_bootstrap,
        store_url=f"s3://protocols-{uuid.uuid4().hex[:12]}",
        s3_endpoint=s3_endpoint,
        s3_access_key="cairn-test",
        s3_secret_key="cairn-test-secret",
        otel_exporter="none",
    )


@pytest.fixture(scope="module")
def store(settings: CairnSettings) -> ObjectStore:
    return open_store(settings=settings)


@pytest.fixture(scope="module")
def packages(store: ObjectStore) -> dict[str, str]:
    """Variant blue serves model a; green (weight 0) serves b, so the endpoint holds both."""
    uris = {
        "a": make_package(store, "models/job-a/", seed=1),
        "b": make_package(store, "models/job-b/", seed=2, trees=5),
    }
    state = revision(1, [("blue", uris["a"], 1.0), ("green", uris["b"], 0.0)])
    document = {**state.model_dump(mode="json"), "rollout": None}
    store.put_bytes(state_spec(EndpointStateView).key(ENDPOINT), json.dumps(document).encode())
    return uris


@pytest.fixture(scope="module")
def served(
    settings: CairnSettings, store: ObjectStore, packages: dict[str, str]
) -> Iterator[tuple[Service, str]]:
    service = create_service(settings, store, GatewaySettings(capture_sample_rate=0))
    with served_in_thread(service.asgi, "the gateway", timeout_s=WAIT_S) as url:
        yield service, url


@pytest.fixture(scope="module")
def base_url(served: tuple[Service, str]) -> str:
    return served[1]


@pytest.fixture(scope="module")
def token(settings: CairnSettings, store: ObjectStore) -> str:
    return token_for(store, settings, ["invoke"], name="invoker", endpoints=[ENDPOINT])


@pytest.fixture(scope="module")
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def offline(store: ObjectStore, uri: str) -> list[float]:
    model = load_model(store, uri)
    return model.predict(model.encode_rows(ROWS)).tolist()


def column_inputs(binary: bool) -> list[triton.InferInput]:
    """One tensor per signature column, from numpy (BYTES for the category)."""
    arrays = {
        "income": np.array(COLUMNS[0], dtype=np.float32),
        "age": np.array(COLUMNS[1], dtype=np.int64),
        "debt": np.array(COLUMNS[2], dtype=np.float32),
        "region": np.array(COLUMNS[3], dtype=object),
    }
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else triton.np_to_triton_dtype(array.dtype)
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_tritonclient_defaults_binary_and_json_answer_the_json_paths_numbers(
    base_url: str, auth: dict[str, str], store: ObjectStore, packages: dict[str, str]
):
    expected = offline(store, packages["a"])
    client = triton.InferenceServerClient(url=base_url.removeprefix("http://"))
    # Each call gets its own headers: tritonclient writes its binary header length into them.
    try:
        assert "binary_tensor_data" in client.get_server_metadata(headers=dict(auth))["extensions"]
        assert client.is_model_ready(ENDPOINT, headers=dict(auth))
        as_json = httpx.post(
            f"{base_url}/v2/models/{ENDPOINT}/infer",
            headers=dict(auth),
            json={"inputs": [{"name": "rows", "shape": [3, 4], "datatype": "BYTES", "data": ROWS}]},
        )
        json_numbers = as_json.json()["outputs"][0]["data"]
        assert json_numbers == expected

        # tritonclient's defaults: binary inputs, no outputs named -> every output binary.
        binary = client.infer(ENDPOINT, column_inputs(binary=True), headers=dict(auth))
        probability = binary.as_numpy("probability")
        assert probability.dtype == np.float32 and probability.tolist() == json_numbers
        assert binary.get_output("probability")["parameters"]["binary_data_size"] == 12

        # One 2-D BYTES tensor, rows in signature order; outputs named with binary_data=True.
        rows = triton.InferInput("rows", [3, 4], "BYTES")
        rows.set_data_from_numpy(np.array(ROWS, dtype=object))
        requested = [
            triton.InferRequestedOutput("probability"),
            triton.InferRequestedOutput("contributions", binary_data=False),
        ]
        explained = client.infer(
            ENDPOINT, [rows], outputs=requested, headers=dict(auth), parameters={"explain": True}
        )
        assert explained.as_numpy("probability").tolist() == json_numbers
        assert explained.get_output("contributions")["shape"] == [3, 5]  # 4 features + bias

        # JSON both ways, as tritonclient sends with binary_data=False.
        json_outputs = [triton.InferRequestedOutput("probability", binary_data=False)]
        plain = client.infer(
            ENDPOINT,
            column_inputs(binary=False),
            outputs=json_outputs,
            headers=dict(auth),
            model_version="blue",
        )
        assert plain.get_output("probability")["data"] == json_numbers
        assert plain.get_response()["model_version"] == "blue"
    finally:
        client.close()


def binary_request(
    inputs: list[dict[str, Any]], data: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": inputs}).encode()
    length = len(header) if header_length is None else header_length
    return header + data, {"Inference-Header-Content-Length": str(length)}


def fp32(name: str, shape: list[int], size: int) -> dict[str, Any]:
    tensor = {"name": name, "shape": shape, "datatype": "FP32"}
    return {**tensor, "parameters": {"binary_data_size": size}}


def strings(*values: str) -> bytes:
    return b"".join(struct.pack("<I", len(value.encode())) + value.encode() for value in values)


@pytest.mark.parametrize(
    ("inputs", "data", "header_length", "reason"),
    [
        ([fp32("rows", [1, 4], 16)], b"\0" * 20, None, "4 bytes after the inputs"),
        ([fp32("rows", [1, 4], 16)], b"\0" * 8, None, "runs past the body"),
        ([fp32("rows", [2, 4], 16)], b"\0" * 16, None, "take 32 bytes"),
        ([fp32("rows", [1, 4], 16)], b"\0" * 16, 10_000, "the body holds"),
        (
            [
                {"name": "region", "shape": [2], "datatype": "BYTES"}
                | {"parameters": {"binary_data_size": 12}}
            ],
            strings("north") + b"\x07\0\0",
            None,
            "length prefix is cut off",
        ),
        (
            [
                {"name": "region", "shape": [1], "datatype": "BYTES"}
                | {"parameters": {"binary_data_size": 9}}
            ],
            struct.pack("<I", 50) + b"north",
            None,
            "declares 50 bytes",
        ),
        (
            [
                {"name": "rows", "shape": [1, 4], "datatype": "FP32"}
                | {"parameters": {"binary_data_size": -1}}
            ],
            b"",
            None,
            "non-negative integer",
        ),
    ],
)
def test_malformed_binary_requests_are_400_with_the_reason(
    base_url: str,
    auth: dict[str, str],
    inputs: list[dict[str, Any]],
    data: bytes,
    header_length: int | None,
    reason: str,
):
    body, headers = binary_request(inputs, data, header_length)
    response = httpx.post(
        f"{base_url}/v2/models/{ENDPOINT}/infer", content=body, headers={**auth, **headers}
    )
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]


def test_a_binary_header_length_that_is_not_a_number_is_400(base_url: str, auth: dict[str, str]):
    body, _ = binary_request([fp32("rows", [1, 4], 16)], b"\0" * 16)
    response = httpx.post(
        f"{base_url}/v2/models/{ENDPOINT}/infer",
        content=body,
        headers={**auth, "Inference-Header-Content-Length": "lots"},
    )
    assert response.status_code == 400 and "byte count" in response.json()["error"]


def test_kserve_v1_ready_predict_and_explain(
    base_url: str,
    auth: dict[str, str],
    settings: CairnSettings,
    store: ObjectStore,
    packages: dict[str, str],
):
    expected = offline(store, packages["a"])
    with httpx.Client(base_url=base_url, headers=auth, timeout=10) as http:
        assert http.get(f"/v1/models/{ENDPOINT}").json() == {"name": ENDPOINT, "ready": True}
        rows = http.post(f"/v1/models/{ENDPOINT}:predict", json={"instances": ROWS})
        assert rows.status_code == 200, rows.text
        assert rows.json() == {"predictions": expected}
        names = ["income", "age", "debt", "region"]
        records = [dict(zip(names, row, strict=True)) for row in ROWS]
        by_name = http.post(f"/v1/models/{ENDPOINT}:predict", json={"instances": records})
        assert by_name.json()["predictions"] == expected
        explained = http.post(f"/v1/models/{ENDPOINT}:explain", json={"instances": ROWS[:1]})
        assert explained.json()["predictions"] == expected[:1]
        assert set(explained.json()["explanations"][0]["feature_contributions"]) == set(names)

        not_v1 = http.post(f"/v1/models/{ENDPOINT}:predict", json={"inputs": ROWS})
        short_row = http.post(f"/v1/models/{ENDPOINT}:predict", json={"instances": [[1, 2]]})
        not_json = http.post(f"/v1/models/{ENDPOINT}:predict", content=b"{nope")
        other_endpoint = http.get("/v1/models/other")
    assert not_v1.status_code == 400 and "instances" in not_v1.json()["error"]
    assert short_row.status_code == 400 and "takes 4" in short_row.json()["error"]
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert other_endpoint.status_code == 403  # the key invokes only ENDPOINT
    anywhere = {"Authorization": f"Bearer {token_for(store, settings, ['invoke'], name='v1')}"}
    missing = httpx.post(
        f"{base_url}/v1/models/nope:predict", json={"instances": ROWS}, headers=anywhere
    )
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_boto3_raises_sagemakers_errors(
    served: tuple[Service, str], token: str, settings: CairnSettings, store: ObjectStore
):
    service, base_url = served
    key_id, _, secret = token.partition(":")
    client = runtime_client(base_url, (key_id, secret))
    with pytest.raises(client.exceptions.ModelError) as model_error:
        client.invoke_endpoint(EndpointName=ENDPOINT, Body=b"1,2,3", ContentType="text/csv")
    raised = model_error.value.response
    assert raised["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert raised["OriginalStatusCode"] == 400 and "takes 4" in raised["OriginalMessage"]
    assert raised["LogStreamArn"].endswith(f"{ENDPOINT}/blue")
    assert "Received client error (400)" in raised["Error"]["Message"]

    with pytest.raises(client.exceptions.ValidationError) as unknown_variant:
        client.invoke_endpoint(
            EndpointName=ENDPOINT, Body=CSV_BODY.encode(), ContentType="text/csv",
            TargetVariant="purple",
        )  # fmt: skip
    assert "purple" in unknown_variant.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as bad_signature:
        runtime_client(base_url, (key_id, "not-the-secret")).invoke_endpoint(
            EndpointName=ENDPOINT, Body=CSV_BODY.encode(), ContentType="text/csv"
        )
    assert bad_signature.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert bad_signature.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    with pytest.raises(ClientError) as not_this_key:
        client.invoke_endpoint(EndpointName="other", Body=b"1", ContentType="text/csv")
    assert not_this_key.value.response["Error"]["Code"] == "AccessDeniedException"

    any_key = token_for(store, settings, ["invoke"], name="boto-any").partition(":")
    anywhere = runtime_client(base_url, (any_key[0], any_key[2]))
    with pytest.raises(anywhere.exceptions.ValidationError) as unknown:
        anywhere.invoke_endpoint(EndpointName="nope", Body=b"1", ContentType="text/csv")
    assert unknown.value.response["Error"]["Message"] == "Endpoint nope of account cairn not found."

    gateway: Gateway = service.api.state.gateway
    gateway.ready = False  # as while the replica loads its endpoints at start
    try:
        with pytest.raises(anywhere.exceptions.ServiceUnavailable):
            anywhere.invoke_endpoint(EndpointName="nope", Body=b"1", ContentType="text/csv")
    finally:
        gateway.ready = True


def test_target_model_and_loaded_models_through_the_sdk_and_cli(
    base_url: str,
    token: str,
    settings: CairnSettings,
    store: ObjectStore,
    packages: dict[str, str],
    tmp_path: Path,
):
    expected_b = offline(store, packages["b"])
    with Client(gateway_url=base_url, api_key=token, home=tmp_path) as sdk:
        answer = sdk.invoke(ENDPOINT, CSV_BODY, target_model="job-b")
        with pytest.raises(InvalidInput, match="takes 4"):  # a ModelError (424) to the SDK
            sdk.invoke(ENDPOINT, "1,2,3")
    assert answer.predictions == expected_b and answer.variant == "blue"

    runner = CliRunner()
    common = ["--target", base_url, "--home", str(tmp_path)]
    invoked = runner.invoke(
        app,
        ["invoke", ENDPOINT, "--body", CSV_BODY, "--target-model", "job-b", "--json", *common],
        env={"CAIRN_API_KEY": token},
    )
    assert invoked.exit_code == 0, invoked.output
    assert json.loads(invoked.stdout)["body"] == expected_b
    both = runner.invoke(
        app, ["invoke", ENDPOINT, "--body", CSV_BODY, "--v2", "--target-model", "job-b", *common]
    )
    assert both.exit_code == 2 and "--target-model is SageMaker's" in both.output

    reader = token_for(store, settings, ["read"], name="reader")
    listed = runner.invoke(
        app, ["endpoints", "models", ENDPOINT, "--json", *common], env={"CAIRN_API_KEY": reader}
    )
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.stdout)
    models = {model["target_model"]: model for model in document["models"]}
    assert set(models) == {"job-a", "job-b"}
    assert models["job-b"]["variants"] == ["green"] and models["job-b"]["size_bytes"] > 0
    assert document["cache"]["loaded_models"] >= 2
    table = runner.invoke(
        app, ["endpoints", "models", ENDPOINT, *common], env={"CAIRN_API_KEY": reader}
    )
    assert "job-b" in table.stdout

    invoke_only = runner.invoke(
        app, ["endpoints", "models", ENDPOINT, *common], env={"CAIRN_API_KEY": token}
    )
    assert invoke_only.exit_code != 0 and "read" in invoke_only.output
