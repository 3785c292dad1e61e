"""InMemoryObjectStore against the shared contract, and open_store's choice of adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn.errors import ConfigError
from cairn.settings import CairnSettings
from cairn.store import InMemoryObjectStore, LocalObjectStore, S3ObjectStore, open_store

from tests.support.store_contract import ObjectStoreContract


class TestInMemoryObjectStore(ObjectStoreContract):
    presigned_get_scheme = None
    presigned_put = False

    @pytest.fixture
    def store(self) -> InMemoryObjectStore:
        return InMemoryObjectStore()


def test_named_memory_stores_are_shared_within_a_process() -> None:
    writer = open_store("memory://shared-test")
    writer.put_bytes("k", b"v")
    assert open_store("memory://shared-test").get_bytes("k") == b"v"
    assert not open_store("memory://").exists("k")


def test_open_store_defaults_to_a_directory_under_home(tmp_path: Path) -> None:
    store = open_store(settings=CairnSettings(home=tmp_path / "home"))
    assert isinstance(store, LocalObjectStore)
    store.put_bytes("a/b", b"x")
    assert (tmp_path / "home" / "store" / "a" / "b").read_bytes() == b"x"
    assert store.url == (tmp_path / "home" / "store").resolve().as_uri()


def test_open_store_reads_s3_settings_without_touching_the_network() -> None:
    settings = CairnSettings(
        store_url="s3://cairn-data/team-a",
        s3_endpoint="http://127.0.0.1:9",
        s3_access_key="key",
        s3_secret_key="secret",  # type: ignore[arg-type]
        s3_region="eu-west-1",
    )
    store = open_store(settings=settings)
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix, store.endpoint) == (
        "cairn-data",
        "team-a/",
        "http://127.0.0.1:9",
    )
    assert store.uri("x/y") == "s3://cairn-data/team-a/x/y"
    assert "X-Amz-Credential=key%2F" in store.presigned_get_url("x/y")
    assert "eu-west-1" in store.presigned_get_url("x/y")


@pytest.mark.parametrize("url", ["ftp://host/x", "s3://", "file://remote-host/x", "s3://a"])
def test_open_store_rejects_unknown_or_malformed_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url, settings=CairnSettings())
