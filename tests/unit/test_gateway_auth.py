"""Who may invoke what: the kernel's keys on the invocation fast path and the v2 routes.

The gateway is served in-process (no broker: the stored endpoint state is loaded the way the
service's start-up loads it) and called over ASGI like a client would, with botocore's own
SigV4 signatures for the SageMaker path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cairn.contracts.events import EndpointUpdated, VariantState
from cairn.contracts.state import EndpointStateView, state_spec
from cairn.service import Service
from cairn.store import InMemoryObjectStore

from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from services.gateway.handlers import GatewayHandlers
from tests.support.auth import auth_settings, scoped_headers, token_for
from tests.unit.test_gateway_payloads import ROWS, make_package

BASE = "http://gateway.test"
ENDPOINT = "credit"
INVOKE = f"/endpoints/{ENDPOINT}/invocations"
CSV_BODY = "\n".join(",".join(str(cell) for cell in row) for row in ROWS).encode()
CSV = {"Content-Type": "text/csv"}


def endpoint_document(artifact_uri: str) -> bytes:
    state = EndpointUpdated(
        endpoint_name=ENDPOINT,
        revision=1,
        status="InService",
        production_variants=[
            VariantState(
                variant_name="blue",
                model_package_group=ENDPOINT,
                model_version=1,
                artifact_uri=artifact_uri,
                weight=1.0,
                instance_count=1,
            )
        ],
    )
    return json.dumps({**state.model_dump(mode="json"), "rollout": None}).encode()


@pytest.fixture(scope="module")
def store() -> InMemoryObjectStore:
    """One deployed model, one package nobody deploys, and a document that is not JSON."""
    store = InMemoryObjectStore()
    deployed = make_package(store, "models/job-a/", seed=1)
    make_package(store, "models/job-secret/", seed=2, trees=3)
    endpoints = state_spec(EndpointStateView)
    store.put_bytes(endpoints.key(ENDPOINT), endpoint_document(deployed))
    store.put_bytes(endpoints.key("broken"), b"{ this is not an endpoint")
    return store


@pytest.fixture
async def service(tmp_path: Path, store: InMemoryObjectStore) -> AsyncIterator[Service]:
    service = create_service(
        auth_settings(home=tmp_path), store, GatewaySettings(capture_sample_rate=0)
    )
    gateway: Gateway = service.api.state.gateway
    handlers = GatewayHandlers(gateway, store, service.publish)
    await handlers.load_stored_endpoints()  # what the service's "gateway" resource opens
    yield service
    await handlers.close(gateway)


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service.asgi)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def headers_for(service: Service, scopes: list[Any], **kw: Any) -> dict[str, str]:
    return scoped_headers(service.store, service.settings, scopes, **kw)


def sigv4_headers(key_id: str, secret: str, body: bytes = CSV_BODY) -> dict[str, str]:
    request = AWSRequest(method="POST", url=BASE + INVOKE, data=body, headers=dict(CSV))
    SigV4Auth(Credentials(key_id, secret), "sagemaker", "eu-west-1").add_auth(request)
    return dict(request.headers.items())


async def test_anonymous_and_bare_secret_invocations_are_refused(
    service: Service, client: httpx.AsyncClient
):
    anonymous = await client.post(INVOKE, content=CSV_BODY, headers=CSV)
    assert anonymous.status_code == 401
    assert "credentials" in anonymous.json()["error"]
    assert "Bearer" in anonymous.headers["www-authenticate"]

    token = token_for(service.store, service.settings, ["invoke"])
    secret = token.partition(":")[2]
    bare = await client.post(INVOKE, content=CSV_BODY, headers={**CSV, "Authorization": secret})
    bare_bearer = await client.post(
        INVOKE, content=CSV_BODY, headers={**CSV, "Authorization": f"Bearer {secret}"}
    )
    assert bare.status_code == 401 and bare_bearer.status_code == 403
    served = await client.post(
        INVOKE, content=CSV_BODY, headers={**CSV, "Authorization": f"Bearer {token}"}
    )
    assert served.status_code == 200, served.text
    assert len(served.text.splitlines()) == len(ROWS)


async def test_a_key_must_hold_invoke_on_this_endpoint(service: Service, client: httpx.AsyncClient):
    elsewhere = headers_for(service, ["invoke"], endpoints=["other-endpoint"])
    read_only = headers_for(service, ["read"])
    bound_here = headers_for(service, ["invoke"], endpoints=[ENDPOINT])
    for refused_headers in (elsewhere, read_only):
        refused = await client.post(INVOKE, content=CSV_BODY, headers={**CSV, **refused_headers})
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "forbidden"
    # A name the key may not invoke is refused before it is looked up: no existence leak.
    unknown = await client.post(
        "/endpoints/no-such/invocations", content=CSV_BODY, headers={**CSV, **bound_here}
    )
    assert unknown.status_code == 403
    served = await client.post(INVOKE, content=CSV_BODY, headers={**CSV, **bound_here})
    assert served.status_code == 200
    assert served.headers["x-amzn-invoked-production-variant"] == "blue"


async def test_botocore_sigv4_signatures_with_a_cairn_key(
    service: Service, client: httpx.AsyncClient
):
    key_id, _, secret = token_for(service.store, service.settings, ["invoke"]).partition(":")
    signed = await client.post(INVOKE, content=CSV_BODY, headers=sigv4_headers(key_id, secret))
    assert signed.status_code == 200, signed.text
    wrong_secret = await client.post(
        INVOKE, content=CSV_BODY, headers=sigv4_headers(key_id, "not-the-secret")
    )
    tampered = await client.post(
        INVOKE, content=b"99,41,3.2,south", headers=sigv4_headers(key_id, secret)
    )
    assert wrong_secret.status_code == 403 and tampered.status_code == 403


async def test_target_model_serves_only_the_endpoints_own_packages(
    service: Service, client: httpx.AsyncClient
):
    invoker = {**CSV, **headers_for(service, ["invoke"])}
    own = await client.post(
        INVOKE, content=CSV_BODY, headers={**invoker, "X-Amzn-SageMaker-Target-Model": "job-a"}
    )
    assert own.status_code == 200, own.text
    for target in ("job-secret", "models/job-secret/manifest.json", "../platform/keys"):
        refused = await client.post(
            INVOKE, content=CSV_BODY, headers={**invoker, "X-Amzn-SageMaker-Target-Model": target}
        )
        assert refused.status_code == 404, (target, refused.text)
        assert "serves no model" in refused.json()["error"]
    gateway: Gateway = service.api.state.gateway
    assert "models/job-secret/" not in gateway.cache  # never loaded
    still_serving = await client.post(INVOKE, content=CSV_BODY, headers=invoker)
    assert still_serving.status_code == 200


async def test_an_unreadable_endpoint_document_is_skipped(
    service: Service, client: httpx.AsyncClient
):
    gateway: Gateway = service.api.state.gateway
    assert gateway.ready
    listed = await client.get("/endpoints", headers=headers_for(service, ["read"]))
    assert listed.status_code == 200, listed.text
    assert [endpoint["endpoint_name"] for endpoint in listed.json()] == [ENDPOINT]
    assert (await client.get("/ping")).json() == {"status": "Healthy"}


async def test_v2_routes_need_invoke_on_the_model(service: Service, client: httpx.AsyncClient):
    request = {"inputs": [{"name": "rows", "shape": [1, 4], "datatype": "BYTES", "data": ROWS[0]}]}
    infer = f"/v2/models/{ENDPOINT}/infer"
    anonymous = await client.post(infer, json=request)
    elsewhere = await client.post(
        infer, json=request, headers=headers_for(service, ["invoke"], endpoints=["other"])
    )
    assert anonymous.status_code == 401 and elsewhere.status_code == 403
    assert (
        await client.get("/endpoints", headers=headers_for(service, ["invoke"]))
    ).status_code == 403

    invoker = headers_for(service, ["invoke"], endpoints=[ENDPOINT])
    served = await client.post(infer, json=request, headers=invoker)
    assert served.status_code == 200, served.text
    assert served.json()["model_version"] == "blue"
    assert (await client.get("/v2/health/ready", headers=invoker)).json() == {"ready": True}
    missing = await client.get("/v2/models/nope", headers=headers_for(service, ["invoke"]))
    assert missing.status_code == 404 and "error" in missing.json()
