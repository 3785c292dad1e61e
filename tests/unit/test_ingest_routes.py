"""The ingest API refuses bodies over its upload limit before reading them into a dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cairn.store.memory import InMemoryObjectStore
from fastapi.testclient import TestClient

from services.ingest.app import create_service
from services.ingest.config import IngestSettings
from tests.support.auth import auth_settings, scoped_headers

LIMIT = 1000


@pytest.fixture
def store() -> InMemoryObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
def client(tmp_path: Path, store: InMemoryObjectStore) -> Iterator[TestClient]:
    settings = auth_settings(home=tmp_path)
    config = IngestSettings(work_dir=tmp_path, max_upload_bytes=LIMIT)
    client = TestClient(create_service(settings, store, config).api)
    client.headers.update(scoped_headers(store, settings, ["data", "read"]))
    yield client


def test_a_body_over_the_limit_is_refused_with_413_whether_sized_or_chunked(
    client: TestClient, store: InMemoryObjectStore
) -> None:
    body = b"id,v\n" + b"1,2\n" * LIMIT
    headers = {"Content-Type": "text/csv"}

    sized = client.post("/datasets/big/upload", content=body, headers=headers)
    chunked = client.post(
        "/datasets/big/upload", content=iter([body[:600], body[600:]]), headers=headers
    )

    for answer in (sized, chunked):
        assert answer.status_code == 413, answer.text
        assert answer.json()["code"] == "payload_too_large"
        assert f"exceeds {LIMIT} bytes" in answer.json()["error"]
    assert list(store.list("datasets/")) == []


def test_the_upload_url_route_answers_400_where_the_store_cannot_sign(
    client: TestClient,
) -> None:
    answer = client.post("/datasets/big/upload-url", json={"filename": "big.csv"})

    assert answer.status_code == 400
    assert answer.json()["code"] == "upload_url_unavailable"
    bad_name = client.post("/datasets/big/upload-url", json={"filename": "../keys.csv"})
    assert bad_name.status_code == 422
