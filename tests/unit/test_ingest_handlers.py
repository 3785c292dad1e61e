"""The ingest service layer without a broker: what it publishes and dead-letters, and when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cairn.bus import envelope_for
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import DatasetIngested, DatasetRegistrationRequested, DatasetRejected
from cairn.datasets import list_datasets
from cairn.errors import InvalidInput
from cairn.store import InMemoryObjectStore
from pydantic import BaseModel

from services.ingest.config import IngestSettings
from services.ingest.handlers import IngestHandlers, UploadUrlUnavailable


class Recorder:
    """Stands in for `Service.publish` and `Service.dead_letter`, keeping what was sent."""

    def __init__(self) -> None:
        self.published: list[BaseModel] = []
        self.dead: list[tuple[Envelope[Any], str, str]] = []

    async def publish(self, data: BaseModel, cause: Envelope[Any] | None = None) -> Envelope[Any]:
        self.published.append(data)
        return envelope_for(data, source="ingest", cause=cause)

    async def dead_letter(self, envelope: Envelope[Any], reason: str, *, error: str) -> None:
        self.dead.append((envelope, reason, error))


@pytest.fixture
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore()
    store.put_bytes("data/clicks/a.jsonl", b'{"user": "u1", "clicks": 3}\n')
    store.put_bytes("platform/keys/k1.json", b'{"key_id": "k1", "secret_sha256": "x"}\n')
    return store


def handlers(store: InMemoryObjectStore, recorder: Recorder, tmp_path: Path) -> IngestHandlers:
    config = IngestSettings(work_dir=tmp_path)
    return IngestHandlers(store, config, recorder.publish, recorder.dead_letter)


def requested(source_uri: str) -> Envelope[DatasetRegistrationRequested]:
    request = DatasetRegistrationRequested(dataset_name="clicks", source_uri=source_uri)
    envelope: Envelope[DatasetRegistrationRequested] = envelope_for(request, source="user")
    return envelope


async def test_a_request_for_the_key_ring_is_rejected_dead_lettered_and_stores_nothing(
    store: InMemoryObjectStore, tmp_path: Path
) -> None:
    recorder = Recorder()
    envelope = requested("platform/keys/")

    await handlers(store, recorder, tmp_path).on_registration_requested(envelope)

    [rejected] = recorder.published
    assert isinstance(rejected, DatasetRejected) and rejected.reason.startswith("source_uri:")
    [(dead, reason, error)] = recorder.dead
    assert dead.event_id == envelope.event_id and reason == "location-refused"
    assert "outside the user namespaces" in error
    assert list_datasets(store) == []


async def test_a_request_in_a_user_namespace_is_ingested_and_not_dead_lettered(
    store: InMemoryObjectStore, tmp_path: Path
) -> None:
    recorder = Recorder()

    await handlers(store, recorder, tmp_path).on_registration_requested(requested("data/clicks/"))

    [ingested] = recorder.published
    assert isinstance(ingested, DatasetIngested) and ingested.row_count == 1
    assert recorder.dead == []


async def test_a_registration_over_http_names_the_field_and_announces_the_rejection(
    store: InMemoryObjectStore, tmp_path: Path
) -> None:
    recorder = Recorder()
    request = DatasetRegistrationRequested(dataset_name="keys", source_uri="gateway/keys/")

    with pytest.raises(InvalidInput) as refused:
        await handlers(store, recorder, tmp_path).register(request)

    assert refused.value.details["field"] == "source_uri" and refused.value.http_status == 400
    assert [type(event) for event in recorder.published] == [DatasetRejected]
    assert recorder.dead == []


class CountingStore(InMemoryObjectStore):
    """Counts listings and reads, to show a refused request touched nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def list(self, prefix: str = "", **kwargs: Any) -> Any:
        self.reads += 1
        return super().list(prefix, **kwargs)

    def get_file(self, key: str, path: Path) -> Any:
        self.reads += 1
        return super().get_file(key, path)


@pytest.mark.parametrize("source_uri", ["", "   ", "/", "."])
async def test_an_empty_source_is_refused_naming_source_uri_and_nothing_is_read(
    tmp_path: Path, source_uri: str
) -> None:
    """It used to list and read the whole store as one dataset."""
    store = CountingStore()
    store.put_bytes("data/a.parquet", b"x")
    recorder = Recorder()
    request = DatasetRegistrationRequested(
        dataset_name="x", source_uri=source_uri, format="parquet"
    )

    with pytest.raises(InvalidInput) as refused:
        await handlers(store, recorder, tmp_path).register(request)

    assert refused.value.http_status == 400 and refused.value.details["field"] == "source_uri"
    assert refused.value.message.startswith("source_uri:")
    assert store.reads == 0


async def test_a_store_that_cannot_sign_urls_says_to_stream_the_upload(tmp_path: Path) -> None:
    config = IngestSettings(work_dir=tmp_path, max_upload_bytes=1000)
    recorder = Recorder()
    ingest = IngestHandlers(InMemoryObjectStore(), config, recorder.publish, recorder.dead_letter)

    with pytest.raises(UploadUrlUnavailable) as refused:
        await ingest.upload_url("big", "big.csv")

    assert refused.value.http_status == 400
    assert "stream the file to POST /datasets/big/upload" in refused.value.message
    assert refused.value.details["max_upload_bytes"] == 1000
    with pytest.raises(InvalidInput, match="names no format"):
        await ingest.upload_url("big", "big.xlsx")


def test_the_upload_limit_is_a_setting_of_two_gib_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert IngestSettings().max_upload_bytes == 2 * 1024**3
    monkeypatch.setenv("CAIRN_INGEST_MAX_UPLOAD_BYTES", "1048576")
    assert IngestSettings().max_upload_bytes == 1048576
