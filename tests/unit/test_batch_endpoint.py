"""Batch transform against a live endpoint, over real HTTP: the endpoint client's batching,
per-record refusals, retries and credentials, and the remote scorers writing exactly what the
in-worker scorers write for the same records.

The server stands in for the gateway with the gateway's own payload code (`cairn.inference`):
the same parsing, scoring and answers. The real gateway is in tests/integration.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.artifacts import LoadedModel, load_model
from cairn.errors import CairnError
from cairn.inference import (
    JSON,
    explanation_records,
    format_response,
    media_type,
    parse_body,
)
from cairn.store import InMemoryObjectStore
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.batch.columnar import ParquetTransformer
from services.batch.endpoint import EndpointClient, GatewayUnavailable, Refusal, RetryPolicy
from services.batch.records import read_text_shard
from services.batch.remote import RemoteColumnScorer, RemoteTextScorer
from services.batch.scoring import LocalColumnScorer, LocalTextScorer
from services.batch.transform import TextTransformer
from services.batch.validation import checked
from tests.support.http_server import served_in_thread
from tests.unit.test_batch_transform import csv_text, make_batch_model, request

TOKEN = "CKIAAAAAAAAAAAAAAAAA:secret"


@dataclass
class Gateway:
    """What the stand-in gateway saw, and failures it is told to answer first."""

    model: LoadedModel
    calls: list[dict[str, Any]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/endpoints/{name}/invocations", self.invoke, methods=["POST"]),
                Route("/v2/models/{name}", self.metadata, methods=["GET"]),
            ]
        )

    async def invoke(self, request: Request) -> Response:
        body = await request.body()
        self.calls.append({"headers": dict(request.headers), "body": body})
        if self.failures:
            status = self.failures.pop(0)
            return JSONResponse({"error": f"scripted {status}"}, status_code=status)
        content_type = media_type(request.headers.get("content-type"))
        try:
            matrix = parse_body(self.model, content_type, body)
            explanations = None
            if request.headers.get("x-amzn-sagemaker-enable-explanations") == "true":
                contributions = self.model.explain(matrix)
                explanations = explanation_records(contributions, self.model.input_names)
            out, out_type = format_response(
                self.model.predict(matrix),
                self.model.output_names,
                media_type(request.headers.get("accept"), default=JSON),
                explanations,
            )
        except CairnError as error:
            return JSONResponse(error.to_dict(), status_code=error.http_status)
        return Response(out, media_type=out_type)

    async def metadata(self, request: Request) -> Response:
        self.calls.append({"headers": dict(request.headers), "body": b""})
        inputs = [{"name": name} for name in self.model.input_names]
        return JSONResponse({"name": request.path_params["name"], "inputs": inputs})


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    store = InMemoryObjectStore()
    return load_model(store, make_batch_model(store))


@pytest.fixture(scope="module")
def served(model: LoadedModel) -> Iterator[tuple[Gateway, str]]:
    gateway = Gateway(model)
    with served_in_thread(gateway.app(), "the stand-in gateway") as url:
        yield gateway, url


@pytest.fixture
def gateway(served: tuple[Gateway, str]) -> Gateway:
    served[0].calls.clear()
    served[0].failures.clear()
    return served[0]


def client(url: str, attempts: int = 3, **kw: Any) -> EndpointClient:
    return EndpointClient(
        lambda: url,
        lambda: TOKEN,
        policy=RetryPolicy(attempts=attempts),
        sleep=lambda _: None,
        **kw,
    )


@pytest.fixture
def endpoint(served: tuple[Gateway, str]) -> Iterator[EndpointClient]:
    made = client(served[1])
    yield made
    made._http.close()


class Tokens:
    """The credential as the batch service's key ring hands it out: read again after a refusal."""

    def __init__(self, *tokens: str) -> None:
        self.left = list(tokens)
        self.current: str | None = None

    def __call__(self) -> str:
        if self.current is None:
            self.current = self.left.pop(0)
        return self.current

    def forget(self) -> None:
        self.current = None


# The client ----------------------------------------------------------------------------------


def test_a_refused_batch_is_retried_record_by_record_so_only_the_bad_record_fails(
    gateway: Gateway, endpoint: EndpointClient
) -> None:
    payloads = [b"0.1,0.2,0.3", b"0.1,oops,0.3", b"1,2,3"]
    answers = endpoint.score_lines("credit", payloads, content_type="text/csv", accept="text/csv")
    assert len(gateway.calls) == 1 + 3  # the batch, then each record alone
    assert isinstance(answers[1], Refusal) and answers[1].status == 400
    assert "oops" in answers[1].reason
    assert [float(a) for a in answers if isinstance(a, bytes)] == pytest.approx(
        gateway.model.predict(gateway.model.encode_rows([[0.1, 0.2, 0.3], [1, 2, 3]])).tolist()
    )
    first = gateway.calls[0]
    assert first["body"] == b"0.1,0.2,0.3\n0.1,oops,0.3\n1,2,3\n"
    assert first["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert (first["headers"]["content-type"], first["headers"]["accept"]) == (
        "text/csv",
        "text/csv",
    )


def test_platform_failures_are_retried_then_fail_the_shard(
    gateway: Gateway, endpoint: EndpointClient
) -> None:
    gateway.failures = [503, 429]
    answers = endpoint.score_lines("credit", [b"1,2,3"], content_type="text/csv", accept="text/csv")
    assert len(gateway.calls) == 3 and isinstance(answers[0], bytes)
    gateway.failures = [500, 502, 503]
    with pytest.raises(GatewayUnavailable, match=r"failed 3 times.*503"):
        endpoint.score_lines("credit", [b"1,2,3"], content_type="text/csv", accept="text/csv")


def test_a_refused_credential_is_read_again_and_an_unreachable_gateway_fails_the_shard(
    gateway: Gateway, served: tuple[Gateway, str]
) -> None:
    tokens = Tokens("CKIAOLD:revoked", TOKEN)
    made = EndpointClient(
        lambda: served[1],
        tokens,
        forget_token=tokens.forget,
        policy=RetryPolicy(attempts=2),
        sleep=lambda _: None,
    )
    gateway.failures = [403]
    made.score_lines("credit", [b"1,2,3"], content_type="text/csv", accept="text/csv")
    sent = [call["headers"]["authorization"] for call in gateway.calls]
    assert sent == ["Bearer CKIAOLD:revoked", f"Bearer {TOKEN}"]
    closed = client("http://127.0.0.1:9", attempts=2)
    with pytest.raises(GatewayUnavailable, match="cannot reach the gateway"):
        closed.score_lines("credit", [b"1,2,3"], content_type="text/csv", accept="text/csv")


# The remote scorers write what the in-worker scorers write ------------------------------------


def both(model: LoadedModel, endpoint: EndpointClient, data: bytes, **overrides: Any) -> Any:
    local_plan = checked(request(**overrides), None)
    remote_plan = checked(
        request(model_package_group=None, model_version=None, endpoint_name="credit", **overrides),
        None,
    )
    header = local_plan.request.transform_input.csv_header
    records = read_text_shard(io.BytesIO(data), 0, len(data), header=header)
    local = TextTransformer(LocalTextScorer(model, local_plan), local_plan).run(records)
    remote = TextTransformer(RemoteTextScorer(endpoint, remote_plan), remote_plan).run(records)
    return local, remote


@pytest.mark.parametrize(
    "overrides",
    [
        {"data_processing": {"input_filter": "$[1:]", "join_source": "Input"}},
        {"data_processing": {"input_filter": "$[1:]", "output_filter": "$[-1]"}},
        {"data_processing": {"input_filter": "$[1:]"}, "explain": True},
        {
            "data_processing": {"input_filter": "$[1:]", "join_source": "Input"},
            "transform_output": {"accept": "application/jsonlines"},
            "explain": True,
        },
        {"data_processing": {"input_filter": "$[1:]"}, "batch_strategy": "SingleRecord"},
    ],
)
def test_csv_through_the_endpoint_writes_the_same_bytes_as_in_the_worker(
    model: LoadedModel, gateway: Gateway, endpoint: EndpointClient, overrides: dict[str, Any]
) -> None:
    good = csv_text(12)
    data = good[:90] + good[90:].replace(b"\n", b"\nid-bad,1.0,nope,2.0\n", 1)
    local, remote = both(model, endpoint, data, **overrides)
    assert remote.lines == local.lines and len(remote.lines) == 12
    assert [e.position for e in remote.errors] == [e.position for e in local.errors]
    assert len(remote.errors) == 1 and "nope" in remote.errors[0].reason


def test_a_csv_header_reorders_columns_for_the_endpoint_as_in_the_worker(
    model: LoadedModel, gateway: Gateway, endpoint: EndpointClient
) -> None:
    data = b"id,f2,f0,f1\nid-0,0.3,0.1,0.2\nid-1,-1,2,0.5\n"
    local, remote = both(model, endpoint, data, transform_input={"csv_header": True})
    assert remote.lines == local.lines and len(remote.lines) == 2
    assert gateway.calls[-1]["body"] == b"0.1,0.2,0.3\n2,0.5,-1\n"  # the model's order


def test_json_lines_through_the_endpoint_join_and_filter_as_in_the_worker(
    model: LoadedModel, gateway: Gateway, endpoint: EndpointClient
) -> None:
    rows = [{"id": i, "features": [0.1 * i, 0.2, -0.3]} for i in range(4)] + [{"id": 9}]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    local, remote = both(
        model,
        endpoint,
        data,
        transform_input={"content_type": "application/jsonlines"},
        data_processing={
            "input_filter": "$.features",
            "join_source": "Input",
            "output_filter": "$['id','SageMakerOutput']",
        },
    )
    assert remote.lines == local.lines and len(remote.lines) == 4
    assert [e.reason for e in remote.errors] == [e.reason for e in local.errors]


def test_parquet_rows_through_the_endpoint_give_the_same_table(
    model: LoadedModel, gateway: Gateway, endpoint: EndpointClient
) -> None:
    table = pa.table(
        {"id": [1, 2, 3], "f1": [0.2, 0.1, 0.0], "f0": [0.1, 0.5, 1.0], "f2": [0.3, None, 0.3]}
    )
    fields: dict[str, Any] = {
        "transform_input": {"content_type": "application/x-parquet"},
        "data_processing": {"join_source": "Input"},
        "explain": True,
    }
    local_plan = checked(request(**fields), None)
    remote_plan = checked(
        request(model_package_group=None, model_version=None, endpoint_name="credit", **fields),
        None,
    )
    local = ParquetTransformer(LocalColumnScorer(model, local_plan), local_plan).run(table, 0)
    remote = ParquetTransformer(RemoteColumnScorer(endpoint, remote_plan), remote_plan).run(
        table, 0
    )
    assert remote[1:] == local[1:] == (3, [])
    local_table, remote_table = (pq.read_table(io.BytesIO(body)) for body in (local[0], remote[0]))
    assert remote_table.equals(local_table)
    assert "contribution_bias" in remote_table.column_names
    assert json.loads(gateway.calls[-1]["body"].split(b"\n")[1]) == {
        "f0": 0.5,
        "f1": 0.1,
        "f2": None,
    }
