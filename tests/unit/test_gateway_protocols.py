"""Binary tensors, KServe v1 bodies and SageMaker's error answers, without a server.

The binary codec is checked against tritonclient's own (de)serialisers, and each SageMaker error
answer is read back with botocore's rest-json parser and the sagemaker-runtime service model, the
two steps boto3 takes before it raises `client.exceptions.<Code>`.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.parsers import create_parser
from cairn.errors import (
    CairnError,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
)
from cairn.inference import instances
from cairn.inference.tensors import decode_tensor, encode_tensor, split_body
from cairn.store import InMemoryObjectStore
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from services.gateway.oip import InferRequest, infer_response
from services.gateway.sagemaker_errors import (
    CredentialRejected,
    EndpointNotFound,
    ModelFailed,
    sagemaker_error,
)
from tests.unit.test_gateway_payloads import ROWS, make_package


class Throttled(CairnError):
    http_status = 429
    code = "throttled"


def test_bytes_tensors_match_tritonclients_serialisation():
    values = np.array([["south", "", "ünïcode"], ["a,b", "x" * 300, "n"]], dtype=object)
    raw = encode_tensor(values, "BYTES")
    assert raw == serialize_byte_tensor(values).item()
    assert decode_tensor("t", "BYTES", 6, raw) == values.ravel().tolist()
    decoded = deserialize_bytes_tensor(raw)
    assert [item.decode() for item in decoded] == values.ravel().tolist()


@pytest.mark.parametrize("datatype", ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64"])
def test_numeric_tensors_round_trip_little_endian(datatype: str):
    array = (np.arange(6).reshape(2, 3) % 2 == 0) if datatype == "BOOL" else np.arange(6) * 3
    raw = encode_tensor(np.asarray(array), datatype)
    assert decode_tensor("t", datatype, 6, raw) == np.asarray(array).ravel().tolist()


def test_split_body_and_bad_lengths():
    assert split_body(b'{"a":1}xyz', "7") == (b'{"a":1}', b"xyz")
    with pytest.raises(InvalidInput, match="body holds 3 bytes"):
        split_body(b"abc", "4")
    with pytest.raises(InvalidInput, match="byte count"):
        split_body(b"abc", "-1")
    with pytest.raises(InvalidInput, match="UTF-8"):
        decode_tensor("t", "BYTES", 1, b"\x01\0\0\0\xff")


@pytest.fixture(scope="module")
def model():
    from cairn.artifacts import load_model

    store = InMemoryObjectStore()
    return load_model(store, make_package(store, "models/p/"))


def binary_columns() -> tuple[dict[str, Any], bytes]:
    columns = list(zip(*ROWS, strict=True))
    parts = [
        ("income", "FP32", np.array(columns[0], dtype=np.float32)),
        ("age", "INT64", np.array(columns[1], dtype=np.int64)),
        ("debt", "FP32", np.array(columns[2], dtype=np.float32)),
        ("region", "BYTES", np.array(columns[3], dtype=object)),
    ]
    inputs, chunks = [], []
    for name, datatype, array in parts:
        raw = encode_tensor(array, datatype)
        chunks.append(raw)
        tensor = {"name": name, "shape": [3], "datatype": datatype}
        inputs.append({**tensor, "parameters": {"binary_data_size": len(raw)}})
    return {"id": "r1", "inputs": inputs}, b"".join(chunks)


def test_a_binary_request_encodes_like_rows_and_is_captured_as_json(model):
    document, binary = binary_columns()
    request = InferRequest(document, binary)
    np.testing.assert_array_equal(request.matrix(model), model.encode_rows(ROWS))
    captured = json.loads(request.as_json())
    assert captured["id"] == "r1"
    assert captured["inputs"][3] == {
        "name": "region",
        "shape": [3],
        "datatype": "BYTES",
        "data": ["south", "north", "unseen"],
    }
    np.testing.assert_array_equal(InferRequest(captured).matrix(model), model.encode_rows(ROWS))


@pytest.mark.parametrize(
    ("parameters", "outputs", "binary"),
    [
        ({}, None, set()),
        ({"binary_data_output": True}, None, {"probability"}),
        ({"binary_data_output": True}, [{"name": "probability"}], {"probability"}),
        (
            {"binary_data_output": True},
            [{"name": "probability", "parameters": {"binary_data": False}}],
            set(),
        ),
        ({}, [{"name": "probability", "parameters": {"binary_data": True}}], {"probability"}),
    ],
)
def test_which_outputs_are_binary(model, parameters, outputs, binary):
    document: dict[str, Any] = {
        "inputs": [{"name": "rows", "shape": [3, 4], "datatype": "BYTES", "data": ROWS}],
        "parameters": parameters,
    }
    if outputs is not None:
        document["outputs"] = outputs
    request = InferRequest(document)
    result = model.predict(request.matrix(model))
    body, header_length = infer_response({"model_name": "m"}, result, model, request)
    if not binary:
        assert header_length is None
        assert json.loads(body)["outputs"][0]["data"] == result.tolist()
        return
    assert header_length is not None
    header = json.loads(body[:header_length])
    (tensor,) = header["outputs"]
    assert "data" not in tensor and tensor["parameters"]["binary_data_size"] == 12
    assert np.frombuffer(body[header_length:], "<f4").tolist() == result.tolist()


def test_classification_outputs_and_v1_bodies_are_refused_with_the_reason():
    rows = [{"name": "rows", "shape": [1, 4], "datatype": "BYTES", "data": ROWS[0]}]
    classification = [{"name": "probability", "parameters": {"classification": 2}}]
    with pytest.raises(InvalidInput, match="classification"):
        InferRequest({"inputs": rows, "outputs": classification})
    assert instances({"instances": [ROWS[0]]}) == [ROWS[0]]
    for not_v1 in ([ROWS[0]], {"inputs": ROWS}, "rows"):
        with pytest.raises(InvalidInput, match="instances"):
            instances(not_v1)


def boto3_reads(status: int, body: dict[str, Any], error_type: str) -> dict[str, Any]:
    """What boto3's sagemaker-runtime client parses from this answer (code, message, fields)."""
    client = boto3.client("sagemaker-runtime", region_name="eu-west-1")
    operation = client.meta.service_model.operation_model("InvokeEndpoint")
    response = {
        "status_code": status,
        "headers": {"x-amzn-errortype": error_type, "content-type": "application/json"},
        "body": json.dumps(body).encode(),
    }
    parser = create_parser("rest-json")
    parsed: dict[str, Any] = parser.parse(response, operation.output_shape)
    shape = client.meta.service_model.shape_for_error_code(parsed["Error"]["Code"])
    if shape is not None:  # what botocore's endpoint adds for a modelled error
        parsed.update(parser.parse(response, shape))
    parsed["exception"] = client.exceptions.from_code(parsed["Error"]["Code"]).__name__
    return parsed


@pytest.mark.parametrize(
    ("error", "status", "code", "exception"),
    [
        (
            CredentialRejected(Forbidden("signature does not match"), credential_sent=True),
            403,
            "InvalidSignatureException",
            "ClientError",
        ),
        (
            CredentialRejected(Unauthenticated("missing credentials"), credential_sent=False),
            401,
            "MissingAuthenticationTokenException",
            "ClientError",
        ),
        (Forbidden("key k may not invoke 'x'"), 403, "AccessDeniedException", "ClientError"),
        (EndpointNotFound("nope"), 404, "ValidationError", "ValidationError"),
        (PayloadTooLarge("too big"), 413, "ValidationError", "ValidationError"),
        (Throttled("slow down"), 429, "ThrottlingException", "ClientError"),
        (Unavailable("loading"), 503, "ServiceUnavailable", "ServiceUnavailable"),
        (CairnError("internal error"), 500, "InternalFailure", "InternalFailure"),
    ],
)
def test_sagemaker_errors_parse_as_boto3_raises_them(error, status, code, exception):
    sent_status, body, error_type = sagemaker_error(error)
    parsed = boto3_reads(sent_status, body, error_type)
    assert (sent_status, parsed["Error"]["Code"], parsed["exception"]) == (status, code, exception)
    assert body["error"] == error.message  # Cairn's own field is still there
    if isinstance(error, EndpointNotFound):
        assert parsed["Error"]["Message"] == "Endpoint nope of account cairn not found."


def test_a_model_error_carries_sagemakers_fields():
    original = InvalidInput("rows have 3 values; the model takes 4")
    status, body, error_type = sagemaker_error(ModelFailed(original, "credit", "blue"))
    parsed = boto3_reads(status, body, error_type)
    assert (status, parsed["exception"]) == (424, "ModelError")
    assert parsed["OriginalStatusCode"] == 400
    assert parsed["OriginalMessage"] == original.message
    assert parsed["LogStreamArn"].endswith(":log-stream:credit/blue")
    assert parsed["Error"]["Message"].startswith("Received client error (400) from blue")
    assert (body["error"], body["code"]) == (original.message, "invalid_input")
