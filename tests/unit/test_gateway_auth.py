"""SigV4 and Bearer checks against requests signed by botocore itself, as boto3 users send them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cairn.access_keys import create_access_key
from cairn.errors import Forbidden, Unauthenticated
from cairn.store import InMemoryObjectStore

from services.gateway.auth import Authenticator, KeyRing

URL = "http://127.0.0.1:8080/endpoints/credit-risk/invocations"
BODY = b"52.5,41,3.2,south"


def signed_headers(key_id: str, secret: str, body: bytes = BODY, url: str = URL) -> dict[str, str]:
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "text/csv", "Accept": "*/*"}
    )
    SigV4Auth(Credentials(key_id, secret), "sagemaker", "eu-west-1").add_auth(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = "127.0.0.1:8080"
    return headers


@pytest.fixture
def auth() -> tuple[Authenticator, str, str]:
    store = InMemoryObjectStore()
    key = create_access_key(store, "unit")
    ring = KeyRing(store)
    ring.reload()
    return Authenticator(ring, enabled=True), key.access_key_id, key.secret_access_key


def check(authenticator: Authenticator, headers: dict[str, str], body: bytes = BODY) -> str | None:
    return authenticator.authenticate(
        method="POST",
        raw_path="/endpoints/credit-risk/invocations",
        raw_query="",
        headers=headers,
        body=body,
    )


def test_botocore_signature_with_a_cairn_key_is_accepted(auth):
    authenticator, key_id, secret = auth
    assert check(authenticator, signed_headers(key_id, secret)) == key_id
    # The derived key is cached per day: a second request verifies the same way.
    assert check(authenticator, signed_headers(key_id, secret)) == key_id


def test_wrong_secret_tampered_body_and_unknown_key_are_forbidden(auth):
    authenticator, key_id, secret = auth
    with pytest.raises(Forbidden, match="signature does not match"):
        check(authenticator, signed_headers(key_id, "wrong-secret"))
    with pytest.raises(Forbidden, match="signature does not match"):
        check(authenticator, signed_headers(key_id, secret), body=b"99,41,3.2,south")
    with pytest.raises(Forbidden, match="unknown access key"):
        check(authenticator, signed_headers("CKIAAAAAAAAAAAAAAAAA", secret))


def test_a_stale_signature_is_refused(auth):
    authenticator, key_id, secret = auth
    headers = signed_headers(key_id, secret)
    signed_at = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    with pytest.raises(Forbidden, match="expired"):
        authenticator.sigv4.verify(
            method="POST",
            raw_path="/endpoints/credit-risk/invocations",
            raw_query="",
            headers=headers,
            body=BODY,
            now=signed_at + timedelta(minutes=20),
        )


def test_bearer_token_and_bare_secret_work_and_wrong_ones_do_not(auth):
    authenticator, key_id, secret = auth
    assert check(authenticator, {"authorization": f"Bearer {key_id}:{secret}"}) == key_id
    assert check(authenticator, {"authorization": f"Bearer {secret}"}) == key_id
    with pytest.raises(Forbidden):
        check(authenticator, {"authorization": f"Bearer {key_id}:nope"})
    with pytest.raises(Unauthenticated, match="missing credentials"):
        check(authenticator, {})


def test_no_key_at_all_refuses_with_how_to_create_one_unless_auth_is_off():
    ring = KeyRing(InMemoryObjectStore())
    with pytest.raises(Unauthenticated, match="POST /admin/keys"):
        check(Authenticator(ring, enabled=True), {})
    assert check(Authenticator(ring, enabled=False), {}) is None


def test_a_key_created_by_another_replica_works_at_once(auth):
    authenticator, _, _ = auth
    other = create_access_key(authenticator.ring.store, "made elsewhere")
    headers = signed_headers(other.access_key_id, other.secret_access_key)
    assert check(authenticator, headers) == other.access_key_id
