"""Locked by default: the kernel's guard, scopes, keys, audit trail and signed envelopes."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from cairn.audit import list_audit_records
from cairn.auth import requires
from cairn.auth.http import assert_routes_guarded
from cairn.auth.keys import KEYS_PREFIX, issue_key
from cairn.auth.sealing import secret_box
from cairn.auth.signing import sign_envelope
from cairn.bus.publish import Signer, envelope_for, outgoing_message, signed
from cairn.contracts.envelope import utc_now
from cairn.contracts.events import DeploymentRequested
from cairn.errors import ConfigError, Forbidden, Unauthenticated
from cairn.service import Service
from cairn.store.memory import InMemoryObjectStore as MemoryStore
from fastapi import APIRouter
from fastapi.testclient import TestClient
from starlette.routing import Route

from tests.support.auth import auth_settings, scoped_headers, token_for

router = APIRouter(prefix="/things")


@router.get("", dependencies=[requires("read")])
async def list_things() -> dict[str, list[str]]:
    return {"things": []}


@router.post("/{name}", status_code=201, dependencies=[requires("deploy", action="thing.create")])
async def create_thing(name: str) -> dict[str, str]:
    return {"name": name}


@router.post("/{name}/invoke", dependencies=[requires("invoke", endpoint_param="name")])
async def invoke_thing(name: str) -> dict[str, str]:
    return {"invoked": name}


@router.delete("/{name}")
async def forgot_to_declare(name: str) -> dict[str, str]:
    return {"deleted": name}


@pytest.fixture()
def service(tmp_path: Path) -> Service:
    svc = Service("things", settings=auth_settings(home=tmp_path), store=MemoryStore())
    svc.include_router(router)
    return svc


@pytest.fixture()
def client(service: Service) -> TestClient:
    return TestClient(service.api)


def _headers(service: Service, scopes: list[str], **kw: object) -> dict[str, str]:
    return scoped_headers(service.store, service.settings, scopes, **kw)  # type: ignore[arg-type]


def test_every_route_but_the_probes_needs_a_credential(client: TestClient) -> None:
    for path in ("/healthz", "/metrics"):
        assert client.get(path).status_code == 200
    for method, path in [("GET", "/things"), ("POST", "/things/a"), ("GET", "/admin/keys")]:
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.json()["code"] == "unauthenticated"
    bad = client.get("/things", headers={"Authorization": "Bearer CKIAAAAAAAAAAAAAAAAA:nope"})
    assert bad.status_code == 403


def test_scopes_are_checked_per_route_and_undeclared_routes_need_admin(
    service: Service, client: TestClient
) -> None:
    reader = _headers(service, ["read"])
    assert client.get("/things", headers=reader).status_code == 200
    assert client.post("/things/a", headers=reader).status_code == 403
    deployer = _headers(service, ["deploy"])
    assert client.post("/things/a", headers=deployer).status_code == 201
    assert client.delete("/things/a", headers=deployer).status_code == 403
    assert client.delete("/things/a", headers=_headers(service, ["admin"])).status_code == 200


def test_invoke_keys_can_be_bound_to_endpoints(service: Service, client: TestClient) -> None:
    bound = _headers(service, ["invoke"], endpoints=["credit"])
    assert client.post("/things/credit/invoke", headers=bound).status_code == 200
    assert client.post("/things/other/invoke", headers=bound).status_code == 403


def test_changes_leave_an_audit_record_naming_the_principal(
    service: Service, client: TestClient
) -> None:
    alice = _headers(service, ["deploy"], name="alice")
    assert client.post("/things/a", headers=alice).status_code == 201
    assert (
        client.post("/things/b", headers=_headers(service, ["read"], name="bob")).status_code == 403
    )
    client.get("/things", headers=alice)  # reads are not changes
    records = list_audit_records(service.store)
    assert [(r.principal, r.action, r.resource, r.outcome) for r in records] == [
        ("bob", "thing.create", "/things/b", "denied"),
        ("alice", "thing.create", "/things/a", "success"),
    ]
    assert list_audit_records(service.store, principal="alice")[0].status_code == 201


def test_keys_are_minted_by_admins_only_listed_without_secrets_and_revocable(
    service: Service, client: TestClient
) -> None:
    body = {"name": "ci", "scopes": ["invoke"], "endpoints": ["credit"]}
    assert (
        client.post("/admin/keys", json=body, headers=_headers(service, ["deploy"])).status_code
        == 403
    )
    admin = _headers(service, ["admin"], name="root")
    created = client.post("/admin/keys", json=body, headers=admin)
    assert created.status_code == 201
    token = created.json()["token"]
    key_id = created.json()["key_id"]
    listed = client.get("/admin/keys", headers=admin).json()["keys"]
    assert all("secret" not in json.dumps(key) for key in listed)
    stored = b"".join(service.store.get_bytes(i.key) for i in service.store.list(KEYS_PREFIX))
    assert token.split(":")[1].encode() not in stored  # hashed + sealed, never plain
    ci = {"Authorization": f"Bearer {token}"}
    assert client.post("/things/credit/invoke", headers=ci).status_code == 200
    assert client.delete(f"/admin/keys/{key_id}", headers=admin).status_code == 200
    assert client.post("/things/credit/invoke", headers=ci).status_code == 403
    actions = [r.action for r in list_audit_records(service.store, principal="root")]
    assert actions == ["key.revoke", "key.create"]


def test_unknown_scope_is_refused_when_a_key_is_made(service: Service, client: TestClient) -> None:
    admin = _headers(service, ["admin"])
    response = client.post("/admin/keys", json={"scopes": ["root"]}, headers=admin)
    assert response.status_code == 422
    with pytest.raises(ConfigError):
        requires("superuser")


def test_expired_keys_stop_working(service: Service, client: TestClient) -> None:
    issued = issue_key(
        service.store, service.box, name="temp", scopes=["read"], created_by="t",
        expires_at=utc_now() + timedelta(seconds=60),
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert client.get("/things", headers=headers).status_code == 200
    key = issued.key.model_copy(update={"expires_at": utc_now() - timedelta(seconds=1)})
    service.store.put_bytes(f"{KEYS_PREFIX}{key.key_id}.json", key.model_dump_json().encode())
    service.authenticator.ring.forget(key.key_id)
    assert client.get("/things", headers=headers).status_code == 403


def test_a_route_that_escapes_the_guard_stops_the_service_from_starting(
    service: Service,
) -> None:
    async def raw(request: object) -> None: ...

    service.api.router.routes.append(Route("/raw", raw))
    with pytest.raises(ConfigError, match="/raw"):
        assert_routes_guarded(service.api)


def test_auth_off_is_explicit(tmp_path: Path) -> None:
    svc = Service(
        "open", settings=auth_settings(home=tmp_path, auth_enabled=False), store=MemoryStore()
    )
    svc.include_router(router)
    assert TestClient(svc.api).delete("/things/a").status_code == 200


def _payload(service: Service, signer: Signer | None) -> bytes:
    data = DeploymentRequested(endpoint_name="e", action="delete")
    envelope = signed(envelope_for(data, source="cli"), signer)
    return outgoing_message(envelope).value


async def test_privileged_requests_need_a_signature_with_the_scope(service: Service) -> None:
    from cairn.contracts.catalogue import spec_for

    spec = spec_for(DeploymentRequested)
    with pytest.raises(Unauthenticated):
        await service._authorise_request(spec, _payload(service, None))
    reader = token_for(service.store, service.settings, ["read"]).split(":")
    with pytest.raises(Forbidden):
        await service._authorise_request(spec, _payload(service, Signer(*reader)))
    deployer = token_for(service.store, service.settings, ["deploy"]).split(":")
    await service._authorise_request(spec, _payload(service, Signer(*deployer)))
    forged = json.loads(_payload(service, Signer(*deployer)))
    forged["data"]["endpoint_name"] = "other"
    with pytest.raises(Forbidden):
        await service._authorise_request(spec, json.dumps(forged).encode())
    box = secret_box(service.settings)
    monitor = Signer("service:monitor", box.service_secret("monitor"))
    await service._authorise_request(spec, _payload(service, monitor))
    trainer = Signer("service:trainer", box.service_secret("trainer"))
    with pytest.raises(Forbidden):
        await service._authorise_request(spec, _payload(service, trainer))
    assert (
        sign_envelope({"a": 1}, "k", "s")["signature"]
        != sign_envelope({"a": 2}, "k", "s")["signature"]
    )


def test_a_key_revoked_elsewhere_stops_working_after_one_background_refresh(
    service: Service,
) -> None:
    from cairn.auth.keys import KeyRing, revoke_key

    ring = KeyRing(service.store, service.box, ttl_s=0.0)
    issued = issue_key(service.store, service.box, name="r", scopes=["read"], created_by="t")
    assert ring.get(issued.key.key_id) is not None
    revoke_key(service.store, issued.key.key_id)  # another replica revoked it
    assert ring.get(issued.key.key_id) is not None  # served from the cache, refresh scheduled
    ring._refresher.submit(lambda: None).result(timeout=5)  # the refresh has run (FIFO worker)
    assert ring.get(issued.key.key_id) is None


def test_an_anonymous_malformed_body_is_401_not_a_validation_error(client: TestClient) -> None:
    response = client.post(
        "/admin/keys", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
