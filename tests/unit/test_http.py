"""The shared HTTP edge, served by a real uvicorn server on a free loopback port."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from cairn.auth.authenticator import Authenticator
from cairn.auth.keys import KeyRing, issue_key
from cairn.auth.sealing import secret_box
from cairn.errors import NotFound
from cairn.http import create_api
from cairn.settings import CairnSettings
from cairn.store.memory import InMemoryObjectStore
from cairn.telemetry import current_correlation_id, setup_telemetry
from fastapi import FastAPI
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

from tests.support.auth import auth_settings

SETTINGS = auth_settings()
KEYS = InMemoryObjectStore()
API_KEY = issue_key(
    KEYS, secret_box(SETTINGS), name="tests", scopes=["admin"], created_by="tests"
).token
MAX_BODY_BYTES = 1024


class Order(BaseModel):
    sku: str
    quantity: int = Field(ge=1)


class Dependency:
    """A readiness dependency the test can break and mend."""

    up = True

    async def check(self) -> bool:
        return self.up


def build_app(store: Dependency) -> FastAPI:
    app = create_api(
        "orders", SETTINGS, readiness={"store": store.check}, max_body_bytes=MAX_BODY_BYTES
    )
    app.state.authenticator = Authenticator(KeyRing(KEYS, secret_box(SETTINGS)))

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, str]:
        if order_id == "crash":
            raise RuntimeError("kaboom in handler")
        if order_id != "o-1":
            raise NotFound(f"no order {order_id!r}", order_id=order_id)
        return {"order_id": order_id}

    @app.post("/orders")
    async def post_order(order: Order) -> Order:
        return order

    @app.get("/context")
    async def context() -> dict[str, str | None]:
        span = trace.get_current_span().get_span_context()
        return {
            "trace_id": format(span.trace_id, "032x"),
            "correlation_id": current_correlation_id(),
        }

    return app


@pytest.fixture(scope="module")
def store() -> Dependency:
    return Dependency()


@pytest.fixture(scope="module")
def base_url(store: Dependency) -> Iterator[str]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # A real SDK tracer provider, so server spans exist and continue incoming trace context.
    setup_telemetry("orders", CairnSettings(otel_exporter="none"))
    root.handlers[:] = handlers
    root.setLevel(level)
    server = uvicorn.Server(
        uvicorn.Config(build_app(store), host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}) as http:
        yield http


def test_probes_and_metrics_need_no_key(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as anonymous:
        health = anonymous.get("/healthz")
        ready = anonymous.get("/readyz")
        scrape = anonymous.get("/metrics")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "service": "orders", "pid": str(os.getpid())}
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok"}
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")


def test_readiness_names_the_failing_check(client: httpx.Client, store: Dependency) -> None:
    store.up = False
    try:
        response = client.get("/readyz")
    finally:
        store.up = True
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "unavailable"
    assert body["checks"] == {"store": "failed"}
    assert "store" in body["error"]
    assert client.get("/readyz").status_code == 200


def test_api_key_missing_is_401_wrong_is_403_right_is_200(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as http:
        missing = http.get("/orders/o-1")
        wrong = http.get("/orders/o-1", headers={"X-API-Key": "not-the-key"})
        wrong_bearer = http.get("/orders/o-1", headers={"Authorization": "Bearer nope"})
        by_header = http.get("/orders/o-1", headers={"X-API-Key": API_KEY})
        by_bearer = http.get("/orders/o-1", headers={"Authorization": f"Bearer {API_KEY}"})
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthenticated"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "forbidden"
    assert wrong_bearer.status_code == 403
    assert by_header.status_code == 200
    assert by_header.json() == {"order_id": "o-1"}
    assert by_bearer.status_code == 200


def test_cairn_error_keeps_its_status_and_code(client: httpx.Client) -> None:
    response = client.get("/orders/o-404")
    assert response.status_code == 404
    assert response.json() == {
        "error": "no order 'o-404'",
        "code": "not_found",
        "details": {"order_id": "o-404"},
    }


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_unhandled_error_is_a_json_500_logged_with_traceback(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cairn.http"):
        response = client.get("/orders/crash")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error", "code": "internal_error"}
    logged = [record for record in caplog.records if record.exc_info]
    assert logged, "the 500 was not logged"
    assert "kaboom in handler" in str(logged[-1].exc_info[1])  # type: ignore[index]


def test_validation_error_names_the_bad_fields(client: httpx.Client) -> None:
    response = client.post("/orders", json={"quantity": 0})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_input"
    assert {field["field"] for field in body["details"]["fields"]} == {"body.sku", "body.quantity"}
    assert "body.sku" in body["error"]


def test_oversize_body_is_413_with_or_without_content_length(client: httpx.Client) -> None:
    too_big = b'{"sku": "' + b"x" * MAX_BODY_BYTES + b'", "quantity": 1}'

    def chunks() -> Iterator[bytes]:
        yield too_big[:512]
        yield too_big[512:]

    declared = client.post("/orders", content=too_big, headers={"content-type": "application/json"})
    chunked = client.post("/orders", content=chunks(), headers={"content-type": "application/json"})
    accepted = client.post("/orders", json={"sku": "a", "quantity": 2})
    assert declared.status_code == 413
    assert declared.json()["code"] == "payload_too_large"
    assert chunked.status_code == 413
    assert chunked.json()["code"] == "payload_too_large"
    assert accepted.status_code == 200


def _request_count(base_url: str, route: str, status: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name != "cairn_http_requests":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels["service"] == "orders"
                and labels["route"] == route
                and labels["status"] == status
            ):
                return sample.value
    return 0.0


def test_metrics_count_requests_per_route_template_and_status(
    client: httpx.Client, base_url: str
) -> None:
    found_before = _request_count(base_url, "/orders/{order_id}", "200")
    missing_before = _request_count(base_url, "/orders/{order_id}", "404")
    for _ in range(3):
        client.get("/orders/o-1")
    client.get("/orders/o-2")
    assert _request_count(base_url, "/orders/{order_id}", "200") == found_before + 3
    assert _request_count(base_url, "/orders/{order_id}", "404") == missing_before + 1
    latency_counts = [
        sample.value
        for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text)
        if family.name == "cairn_http_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels["route"] == "/orders/{order_id}"
    ]
    assert sum(latency_counts) >= 4


def test_incoming_trace_context_and_correlation_id_are_continued(client: httpx.Client) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = client.get(
        "/context",
        headers={
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
            "X-Correlation-ID": "corr-http-1",
        },
    )
    assert response.json() == {"trace_id": trace_id, "correlation_id": "corr-http-1"}
