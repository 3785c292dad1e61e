"""One tie rule everywhere: of rows with the same record id and event time, the later write wins,
then the later row of a batch; training sets, time travel and GetRecord all give that row."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cairn.contracts.events import TrainingSetRequested
from cairn.datasets import write_dataset_version
from cairn.store import InMemoryObjectStore

from services.featurestore import operations
from services.featurestore.datasets_io import read_dataset
from services.featurestore.offline import FeatureRef, OfflineStore
from services.featurestore.online import open_online_store
from services.featurestore.operations import FeatureStore
from tests.unit.test_featurestore_operations import group_request

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


@pytest.fixture
def fs(tmp_path: Path) -> FeatureStore:
    store = InMemoryObjectStore()
    offline = OfflineStore(store, "featurestore/offline", cache_dir=tmp_path / "cache")
    feature_store = FeatureStore(store, open_online_store("memory://"), offline)
    operations.create_group(feature_store, group_request())
    return feature_store


def spend_everywhere(fs: FeatureStore, card_id: str) -> dict[str, Any]:
    """The card's spend online, offline as of LATER, and in a training set at LATER."""
    online = operations.get_record(fs, "cards", card_id, ["spend"])["record"]["spend"]
    state = operations.state_as_of(fs, "cards", LATER, False, 100)["records"]
    offline = {row["card_id"]: row["spend"] for row in state}[card_id]
    entity = pa.table({"card_id": [card_id], "at": pa.array([LATER], pa.timestamp("us", "UTC"))})
    joined = fs.offline.build_training_set(
        entity, "card_id", "at", [FeatureRef("cards", ("spend",))]
    )
    return {"online": online, "offline": offline, "training": joined["cards__spend"][0].as_py()}


def test_training_set_builds_resolve_in_batch_ties_to_the_last_row_every_time(
    tmp_path: Path,
) -> None:
    offline = OfflineStore(InMemoryObjectStore(), cache_dir=tmp_path / "cache", clock=lambda: T0)
    offline.create_group("user", "user_id", "ts")
    ids = [i % 2000 for i in range(10_000)]  # five rows per id, all at the same event time
    random.Random(3).shuffle(ids)
    offline.append("user", pa.table({"user_id": ids, "ts": [T0] * 10_000, "score": range(10_000)}))
    last_row = {user_id: float(row) for row, user_id in enumerate(ids)}
    entity = pa.table(
        {
            "user_id": list(range(2000)) * 2,
            "at": pa.array([LATER] * 4000, pa.timestamp("us", "UTC")),
        }
    )

    builds = [
        offline.build_training_set(
            entity, "user_id", "at", [FeatureRef("user", ("score",))], as_of_known_time=known
        )
        .column("user__score")
        .to_pylist()
        for known in (False, False, True)
    ]
    state = offline.state_as_of("user", LATER)

    expected = [last_row[user_id] for user_id in list(range(2000)) * 2]
    assert builds[0] == builds[1] == expected
    assert builds[2] == expected  # the as-of-known-time join applies the same rule
    assert dict(zip(state["user_id"].to_pylist(), state["score"].to_pylist(), strict=True)) == {
        user_id: last_row[user_id] for user_id in range(2000)
    }


def test_put_record_a_then_b_then_a_ends_at_a_online_and_offline(fs: FeatureStore) -> None:
    for spend in (1.0, 2.0, 1.0):
        record = {"card_id": "a", "ts": T0.isoformat(), "spend": spend}
        assert operations.put_record(fs, "cards", record).records_stored_online == 1

    assert spend_everywhere(fs, "a") == {"online": 1.0, "offline": 1.0, "training": 1.0}


def test_a_batch_with_ties_keeps_its_last_row_online_and_offline(fs: FeatureStore) -> None:
    records = [
        {"card_id": "a", "ts": T0.isoformat(), "spend": 1.0},
        {"card_id": "a", "ts": T0.isoformat(), "spend": 2.0},
        {"card_id": "a", "ts": T0.isoformat(), "spend": 3.0},
    ]

    operations.ingest_records(fs, "cards", records, "event-1")

    assert spend_everywhere(fs, "a") == {"online": 3.0, "offline": 3.0, "training": 3.0}


def test_a_redelivered_batch_does_not_override_a_later_write_anywhere(fs: FeatureStore) -> None:
    first = [{"card_id": "a", "ts": T0.isoformat(), "spend": 1.0}]
    second = [{"card_id": "a", "ts": T0.isoformat(), "spend": 2.0}]
    operations.ingest_records(fs, "cards", first, "event-1")
    operations.ingest_records(fs, "cards", second, "event-2")

    replay = operations.ingest_records(fs, "cards", first, "event-1")

    assert replay.records_stored_online == 0
    assert spend_everywhere(fs, "a") == {"online": 2.0, "offline": 2.0, "training": 2.0}


def test_a_put_after_a_delete_at_the_same_time_brings_the_record_back_in_both_stores(
    fs: FeatureStore,
) -> None:
    operations.put_record(fs, "cards", {"card_id": "a", "ts": T0.isoformat(), "spend": 1.0})
    assert operations.delete_record(fs, "cards", "a", T0)
    operations.put_record(fs, "cards", {"card_id": "a", "ts": T0.isoformat(), "spend": 5.0})

    assert spend_everywhere(fs, "a") == {"online": 5.0, "offline": 5.0, "training": 5.0}
    assert operations.delete_record(fs, "cards", "a", T0)  # and a later delete hides it again
    assert operations.state_as_of(fs, "cards", LATER, False, 10)["records"] == []


def test_a_training_set_request_is_built_the_same_twice(fs: FeatureStore) -> None:
    records = [
        {"card_id": f"c{i % 50}", "ts": T0.isoformat(), "spend": float(i)} for i in range(500)
    ]
    operations.ingest_records(fs, "cards", records, "event-1")
    entity = pa.table(
        {
            "card_id": [f"c{i}" for i in range(50)],
            "at": pa.array([LATER] * 50, pa.timestamp("us", "UTC")),
        }
    )
    uri = write_dataset_version(fs.store, "entities", entity)[0].uri

    def build(name: str) -> list[Any]:
        request = TrainingSetRequested(
            training_set_name=name,
            entity_dataset_uri=uri,
            entity_id_column="card_id",
            entity_time_column="at",
            features=["cards:spend"],
        )
        doc = operations.build_training_set(fs, request)
        return read_dataset(fs.store, doc.dataset_uri).column("cards__spend").to_pylist()

    assert build("first") == build("second") == [float(450 + i) for i in range(50)]
