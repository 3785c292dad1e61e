"""Feature store operations in memory: groups, ingestion, reads, TTL, deletes, training sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cairn.contracts.events import (
    FeatureDefinition,
    FeatureGroupCreationRequested,
    TrainingSetRequested,
)
from cairn.datasets import resolve_dataset_uri, write_dataset_version
from cairn.errors import Conflict, InvalidInput, NotFound
from cairn.store import InMemoryObjectStore

from services.featurestore import operations
from services.featurestore.datasets_io import read_dataset
from services.featurestore.domain import InvalidRecord
from services.featurestore.offline import OfflineStore
from services.featurestore.online import open_online_store
from services.featurestore.operations import BatchGetItem, FeatureStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def group_request(name: str = "cards", **overrides: Any) -> FeatureGroupCreationRequested:
    fields: dict[str, Any] = {
        "feature_group_name": name,
        "record_identifier_feature_name": "card_id",
        "event_time_feature_name": "ts",
        "feature_definitions": [
            FeatureDefinition(name="card_id", type="String"),
            FeatureDefinition(name="ts", type="Timestamp"),
            FeatureDefinition(name="spend", type="Fractional"),
            FeatureDefinition(name="txns", type="Integral"),
        ],
    }
    return FeatureGroupCreationRequested(**(fields | overrides))


@pytest.fixture
def fs(tmp_path: Path) -> FeatureStore:
    store = InMemoryObjectStore()
    offline = OfflineStore(store, "featurestore/offline", cache_dir=tmp_path / "cache")
    feature_store = FeatureStore(store, open_online_store("memory://"), offline)
    operations.create_group(feature_store, group_request())
    return feature_store


def test_creating_a_group_again_is_idempotent_and_a_different_one_conflicts(
    fs: FeatureStore,
) -> None:
    group, created = operations.create_group(fs, group_request())
    assert not created and group.feature_group_name == "cards"
    assert fs.store.exists("featurestore/groups/cards.json")
    with pytest.raises(Conflict):
        operations.create_group(fs, group_request(ttl_s=60))
    assert [g.feature_group_name for g in operations.list_groups(fs)] == ["cards"]


def test_out_of_order_records_keep_the_latest_online_and_all_history_offline(
    fs: FeatureStore,
) -> None:
    operations.put_record(fs, "cards", {"card_id": "a", "ts": at(2), "spend": 20.0})
    late = operations.put_record(fs, "cards", {"card_id": "a", "ts": at(1), "spend": 10.0})
    assert late.records_stored_online == 0
    assert operations.get_record(fs, "cards", "a", None)["record"]["spend"] == 20.0
    past = operations.state_as_of(fs, "cards", T0 + timedelta(hours=1.5), False, 100)
    assert [row["spend"] for row in past["records"]] == [10.0]


def test_a_batch_stores_its_valid_records_and_reports_the_invalid_ones(fs: FeatureStore) -> None:
    records = [
        {"card_id": "a", "ts": at(1), "spend": 1.0},
        {"card_id": "b", "ts": at(1), "spend": "lots"},
        {"card_id": "c", "ts": at(1), "txns": 3},
    ]
    result = operations.ingest_records(fs, "cards", records, "event-1")
    assert (result.records_written, result.records_rejected) == (2, 1)
    assert "record 1: feature 'spend' must be Fractional" in result.reasons()[0]
    assert operations.get_record(fs, "cards", "c", ["txns"])["record"] == {"txns": 3}
    with pytest.raises(NotFound):
        operations.get_record(fs, "cards", "b", None)
    # Redelivery of the same event adds no offline rows.
    operations.ingest_records(fs, "cards", records, "event-1")
    assert len(fs.offline.files("cards")) == 1


def test_put_record_refuses_an_invalid_record_whole(fs: FeatureStore) -> None:
    with pytest.raises(InvalidRecord, match="'txns' must be Integral"):
        operations.put_record(fs, "cards", {"card_id": "a", "ts": at(0), "txns": "many"})
    assert fs.offline.files("cards") == []
    with pytest.raises(NotFound, match="no feature group 'nope'"):
        operations.put_record(fs, "nope", {"card_id": "a"})


def test_ttl_hides_expired_records_online(fs: FeatureStore) -> None:
    operations.create_group(fs, group_request("recent", ttl_s=60))
    now = datetime.now(UTC)
    operations.put_record(
        fs, "recent", {"card_id": "old", "ts": (now - timedelta(hours=1)).isoformat()}
    )
    operations.put_record(fs, "recent", {"card_id": "new", "ts": now.isoformat()})
    with pytest.raises(NotFound):
        operations.get_record(fs, "recent", "old", None)
    found = operations.batch_get(fs, [BatchGetItem("recent", ["old", "new"])])
    assert [r["record_identifier"] for r in found["records"]] == ["new"]
    assert found["not_found"] == [{"feature_group_name": "recent", "record_identifier": "old"}]


def test_delete_hides_the_record_and_a_late_older_put_does_not_resurrect_it(
    fs: FeatureStore,
) -> None:
    operations.put_record(fs, "cards", {"card_id": "a", "ts": at(1), "spend": 1.0})
    assert operations.delete_record(fs, "cards", "a", T0 + timedelta(hours=2))
    operations.put_record(fs, "cards", {"card_id": "a", "ts": at(1.5), "spend": 9.0})
    with pytest.raises(NotFound):
        operations.get_record(fs, "cards", "a", None)
    assert operations.state_as_of(fs, "cards", T0 + timedelta(hours=3), False, 10)["records"] == []


def test_bulk_ingestion_from_a_dataset_counts_bad_rows(fs: FeatureStore) -> None:
    rows = pa.table(
        {
            "card_id": ["a", "b", None],
            "ts": pa.array([T0, T0, T0], pa.timestamp("us", tz="UTC")),
            "spend": [1.0, 2.0, 3.0],
        }
    )
    version, _ = write_dataset_version(fs.store, "card-history", rows)
    result = operations.ingest_dataset(fs, "cards", version.uri, "bulk-1", batch_rows=2)
    assert (result.records_written, result.records_rejected) == (2, 1)
    assert result.reasons() == ["record 2: required feature 'card_id' is missing"]
    assert operations.get_record(fs, "cards", "b", None)["record"]["spend"] == 2.0


def test_training_set_is_point_in_time_correct_and_stored_as_a_dataset(fs: FeatureStore) -> None:
    operations.ingest_records(
        fs,
        "cards",
        [
            {"card_id": "a", "ts": at(0), "spend": 1.0},
            {"card_id": "a", "ts": at(2), "spend": 2.0},
        ],
        "history",
    )
    entity = pa.table(
        {
            "card_id": ["a", "a", "z"],
            "at": pa.array(
                [T0 + timedelta(hours=h) for h in (1, 3, 3)], pa.timestamp("us", tz="UTC")
            ),
            "label": [0, 1, 0],
        }
    )
    entity_uri = write_dataset_version(fs.store, "labels", entity)[0].uri
    request = TrainingSetRequested(
        training_set_name="ts-1",
        entity_dataset_uri=entity_uri,
        entity_id_column="card_id",
        entity_time_column="at",
        features=["cards:spend"],
    )
    doc = operations.build_training_set(fs, request)
    assert doc.row_count == 3 and doc.dataset_uri == "dataset://ts-1@1"
    assert resolve_dataset_uri(fs.store, doc.dataset_uri).version.row_count == 3
    table = read_dataset(fs.store, doc.dataset_uri)
    assert table.column("cards__spend").to_pylist() == [1.0, 2.0, None]
    assert operations.build_training_set(fs, request).dataset_uri == doc.dataset_uri
    with pytest.raises(Conflict):
        operations.build_training_set(fs, request.model_copy(update={"as_of_known_time": True}))


def test_reads_naming_an_unknown_feature_are_refused_naming_it(fs: FeatureStore) -> None:
    operations.put_record(fs, "cards", {"card_id": "a", "ts": at(0), "spend": 1.0})

    with pytest.raises(InvalidInput) as batch:
        operations.batch_get(fs, [BatchGetItem("cards", ["a"], ["spend", "spnd"])])
    with pytest.raises(InvalidInput) as single:
        operations.get_record(fs, "cards", "a", ["limit"])

    assert batch.value.http_status == 400 and "'spnd'" in batch.value.message
    assert batch.value.details["unknown_features"] == ["spnd"]
    assert single.value.details["unknown_features"] == ["limit"]
    found = operations.batch_get(fs, [BatchGetItem("cards", ["a"], ["spend", "card_id"])])
    assert found["records"][0]["record"] == {"spend": 1.0, "card_id": "a"}


def test_record_ids_with_a_slash_are_stored_read_and_deleted(fs: FeatureStore) -> None:
    operations.put_record(fs, "cards", {"card_id": "eu/4242", "ts": at(0), "spend": 1.0})

    assert operations.get_record(fs, "cards", "eu/4242", None)["record"]["spend"] == 1.0
    assert operations.delete_record(fs, "cards", "eu/4242", T0 + timedelta(hours=1))
    with pytest.raises(NotFound):
        operations.get_record(fs, "cards", "eu/4242", None)


@pytest.mark.parametrize(
    "entity_times",
    [[], [None, None]],
    ids=["zero-rows", "all-null-times"],
)
def test_known_time_training_sets_with_no_feature_values_are_built_with_nulls(
    fs: FeatureStore, entity_times: list[datetime | None]
) -> None:
    # Written now, so unknown at any entity time in June: every feature value is null.
    operations.put_record(fs, "cards", {"card_id": "a", "ts": at(0), "spend": 1.0})
    for label, times in (("late", [T0 + timedelta(hours=1)]), ("odd", entity_times)):
        entity = pa.table(
            {
                "card_id": pa.array(["a"] * len(times), pa.string()),
                "at": pa.array(times, pa.timestamp("us", tz="UTC")),
            }
        )
        uri = write_dataset_version(fs.store, f"entities-{label}", entity)[0].uri
        request = TrainingSetRequested(
            training_set_name=f"known-{label}",
            entity_dataset_uri=uri,
            entity_id_column="card_id",
            entity_time_column="at",
            features=["cards:spend", "cards:txns"],
            as_of_known_time=True,
        )

        doc = operations.build_training_set(fs, request)

        table = read_dataset(fs.store, doc.dataset_uri)
        assert doc.row_count == len(times) == table.num_rows
        assert table.column("cards__spend").to_pylist() == [None] * len(times)
        assert table.schema.field("cards__txns").type == pa.int64()
