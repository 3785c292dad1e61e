"""S3ObjectStore against the shared contract on a real moto S3 server over HTTP."""

from __future__ import annotations

import uuid

import pytest
from cairn.errors import Unavailable
from cairn.settings import CairnSettings
from cairn.store import S3ObjectStore, open_store

from tests.support.moto_server import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.store_contract import ObjectStoreContract

pytestmark = pytest.mark.integration


class TestS3ObjectStore(ObjectStoreContract):
    presigned_get_scheme = "http"
    presigned_put = True
    large_file_size = 11 * 1024 * 1024 + 5  # three parts of a multipart upload

    @pytest.fixture
    def store(self, s3_settings: CairnSettings) -> S3ObjectStore:
        # A fresh prefix per test keeps tests apart inside the class's bucket.
        store = open_store(f"{s3_settings.store_url}/t-{uuid.uuid4().hex[:8]}", s3_settings)
        assert isinstance(store, S3ObjectStore)
        return store


def test_bucket_is_created_on_first_write(s3_store: S3ObjectStore, s3_endpoint: str) -> None:
    bucket = f"cairn-new-{uuid.uuid4().hex[:8]}"
    store = S3ObjectStore(
        bucket, endpoint=s3_endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY
    )
    assert list(store.list()) == []
    assert not store.exists("a")
    store.put_bytes("a", b"1", if_none_match=True)
    assert store.get_bytes("a") == b"1"


def test_prefixes_isolate_stores_in_one_bucket(s3_settings: CairnSettings) -> None:
    team_a = open_store(f"{s3_settings.store_url}/team-a", s3_settings)
    team_b = open_store(f"{s3_settings.store_url}/team-b", s3_settings)
    team_a.put_bytes("model.json", b"a")
    assert not team_b.exists("model.json")
    assert [info.key for info in team_a.list()] == ["model.json"]
    assert team_a.uri("model.json").endswith("/team-a/model.json")


def test_unreachable_server_raises_unavailable() -> None:
    store = S3ObjectStore(
        "cairn-down", endpoint="http://127.0.0.1:9", access_key="k", secret_key="s"
    )
    with pytest.raises(Unavailable):
        store.get_bytes("anything")
    with pytest.raises(Unavailable):
        store.put_bytes("anything", b"x", if_none_match=True)
