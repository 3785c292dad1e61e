"""The feature store's service layer without a broker: what a training-set request answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cairn.bus import envelope_for
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    FeatureIngestionFailed,
    FeatureIngestionRequested,
    FeatureRecordsPut,
    TrainingSetRequested,
)
from cairn.errors import InvalidInput
from cairn.store import InMemoryObjectStore
from pydantic import BaseModel

from services.featurestore.config import FeatureStoreSettings
from services.featurestore.handlers import FeatureStoreHandlers
from tests.unit.test_featurestore_operations import group_request


class Recorder:
    """Stands in for `Service.publish` and `Service.dead_letter`, keeping what was sent."""

    def __init__(self) -> None:
        self.published: list[BaseModel] = []
        self.dead: list[tuple[Envelope[Any], str, str]] = []

    async def publish(self, data: BaseModel, cause: Envelope[Any] | None = None) -> Envelope[Any]:
        self.published.append(data)
        return envelope_for(data, source="featurestore", cause=cause)

    async def dead_letter(self, envelope: Envelope[Any], reason: str, *, error: str) -> None:
        self.dead.append((envelope, reason, error))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def handlers(tmp_path: Path, recorder: Recorder) -> AsyncIterator[FeatureStoreHandlers]:
    config = FeatureStoreSettings(online_url="memory://", cache_dir=tmp_path / "cache")
    feature_store = FeatureStoreHandlers(
        InMemoryObjectStore(), tmp_path, config, recorder.publish, recorder.dead_letter
    )
    await feature_store.open()
    await feature_store.create_group(group_request())
    recorder.published.clear()
    yield feature_store
    await feature_store.close()


def request(**overrides: Any) -> TrainingSetRequested:
    fields: dict[str, Any] = {
        "training_set_name": "ts-1",
        "entity_dataset_uri": "dataset://no-such-entities@1",
        "entity_id_column": "card_id",
        "entity_time_column": "at",
        "features": ["cards:spend"],
        "as_of_known_time": True,
    }
    return TrainingSetRequested(**(fields | overrides))


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({}, "dataset_not_found"),
        ({"features": ["nope:spend"]}, "not_found"),
        ({"entity_dataset_uri": "data/entities.parquet"}, "invalid_input"),
    ],
    ids=["missing-dataset", "unknown-group", "not-a-dataset"],
)
async def test_a_request_over_the_bus_that_cannot_be_built_is_answered_and_settled(
    handlers: FeatureStoreHandlers, recorder: Recorder, overrides: dict[str, Any], code: str
) -> None:
    envelope: Envelope[TrainingSetRequested] = envelope_for(request(**overrides), source="user")

    await handlers.on_training_set_requested(envelope)  # settled: no exception for the bus

    [failed] = recorder.published
    assert type(failed).__name__ == "TrainingSetFailed"
    assert failed.model_dump()["training_set_name"] == "ts-1"
    assert failed.model_dump()["code"] == code and failed.model_dump()["reason"]
    assert recorder.dead == []


async def test_a_refused_request_over_http_is_a_4xx_and_announced(
    handlers: FeatureStoreHandlers, recorder: Recorder
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await handlers.build_training_set(request(entity_dataset_uri="platform/keys/"))

    assert refused.value.http_status == 400
    assert [type(event).__name__ for event in recorder.published] == ["TrainingSetFailed"]


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (FeatureRecordsPut(feature_group_name="no-such-group", records=[{"id": "1"}]), "not_found"),
        (
            FeatureIngestionRequested(
                feature_group_name="no-such-group", dataset_uri="dataset://customers@1"
            ),
            "not_found",
        ),
        (
            FeatureIngestionRequested(feature_group_name="g", dataset_uri="platform/keys/"),
            "invalid_input",
        ),
    ],
    ids=["records-unknown-group", "bulk-unknown-group", "bulk-not-a-dataset"],
)
async def test_ingestion_that_can_never_succeed_is_failed_and_dead_lettered_not_retried(
    handlers: FeatureStoreHandlers, recorder: Recorder, event: BaseModel, code: str
) -> None:
    envelope = envelope_for(event, source="user")
    on = (
        handlers.on_records_put
        if isinstance(event, FeatureRecordsPut)
        else handlers.on_ingestion_requested
    )

    await on(envelope)  # settled: no exception, so the bus does not retry it

    [failed] = recorder.published
    assert isinstance(failed, FeatureIngestionFailed)
    assert failed.failure_code.endswith(code) and failed.reason
    [(dead, reason, error)] = recorder.dead
    assert dead.event_id == envelope.event_id
    assert (reason, error) == ("request-refused", failed.reason)
