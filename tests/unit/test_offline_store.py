"""Offline store writes: immutable partitioned files, idempotent batches, time travel, caching."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.errors import Conflict, InvalidInput, NotFound
from cairn.store import InMemoryObjectStore, LocalObjectStore

from services.featurestore.offline import FeatureRef, OfflineStore

DAY1 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
DAY2 = DAY1 + timedelta(hours=1)  # 2026-03-02 00:30 UTC


def table(**columns: list[Any]) -> pa.Table:
    return pa.table(columns)


@pytest.fixture
def memory_store() -> InMemoryObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
def offline(memory_store: InMemoryObjectStore, tmp_path: Path) -> OfflineStore:
    store = OfflineStore(memory_store, prefix="fs/offline", cache_dir=tmp_path / "cache")
    store.create_group("user", "user_id", "ts")
    return store


def test_append_writes_one_immutable_file_per_event_date(
    offline: OfflineStore, memory_store: InMemoryObjectStore
) -> None:
    keys = offline.append("user", table(user_id=[1, 2, 3], ts=[DAY1, DAY2, DAY2], score=[1, 2, 3]))
    assert sorted(k.rsplit("/", 1)[0] for k in keys) == [
        "fs/offline/user/event_date=2026-03-01",
        "fs/offline/user/event_date=2026-03-02",
    ]
    day2 = pq.read_table(io.BytesIO(memory_store.get_bytes(sorted(keys)[1])))
    assert day2.column("user_id").to_pylist() == [2, 3]
    assert day2.column("_deleted").to_pylist() == [False, False]
    assert day2.schema.field("_write_time").type == pa.timestamp("us", "UTC")
    stamped = day2.column("_write_time").to_pylist()
    assert stamped[0] == stamped[1] and abs(stamped[0] - datetime.now(UTC)) < timedelta(minutes=1)


def test_later_appends_and_deletes_never_rewrite_earlier_files(
    offline: OfflineStore, memory_store: InMemoryObjectStore
) -> None:
    offline.append("user", table(user_id=[1], ts=[DAY1], score=[1]))
    before = {info.key: memory_store.get_bytes(info.key) for info in offline.files("user")}
    offline.append("user", table(user_id=[1], ts=[DAY1], score=[2]))
    offline.delete("user", 1, DAY1)
    after = {info.key: memory_store.get_bytes(info.key) for info in offline.files("user")}
    assert len(after) == 3
    assert all(after[key] == data for key, data in before.items())


def test_append_with_the_same_batch_id_writes_once(offline: OfflineStore) -> None:
    batch = table(user_id=[1, 2], ts=[DAY1, DAY2], score=[10, 20])
    first = offline.append("user", batch, batch_id="kafka-offset-42")
    again = offline.append("user", batch, batch_id="kafka-offset-42")
    assert len(first) == 2 and again == []
    state = offline.state_as_of("user", DAY2)
    assert state.column("user_id").to_pylist() == [1, 2]
    other = offline.append("user", batch, batch_id="kafka-offset-43")
    assert len(other) == 2
    assert len(offline.files("user")) == 4


def test_state_as_of_travels_back_in_time(offline: OfflineStore) -> None:
    offline.append("user", table(user_id=[1, 2], ts=[DAY1, DAY1], score=[1, 2]))
    offline.append("user", table(user_id=[1], ts=[DAY2], score=[11]))
    offline.delete("user", 2, DAY2)
    then = offline.state_as_of("user", DAY1 + timedelta(minutes=5))
    assert then.to_pylist() == [
        {"user_id": 1, "ts": DAY1, "score": 1},
        {"user_id": 2, "ts": DAY1, "score": 2},
    ]
    now = offline.state_as_of("user", DAY2)
    assert now.to_pylist() == [{"user_id": 1, "ts": DAY2, "score": 11}]


def test_state_as_of_known_time_ignores_rows_written_later(tmp_path: Path) -> None:
    written_at = [DAY1, DAY2 + timedelta(days=1)]
    clock_values = iter(written_at)
    offline = OfflineStore(
        InMemoryObjectStore(), cache_dir=tmp_path, clock=lambda: next(clock_values)
    )
    offline.create_group("user", "user_id", "ts")
    offline.append("user", table(user_id=[1], ts=[DAY1], score=[1]))
    offline.append("user", table(user_id=[1], ts=[DAY1 + timedelta(minutes=1)], score=[2]))
    as_known = offline.state_as_of("user", DAY2, as_of_known_time=True)
    assert as_known.column("score").to_pylist() == [1]
    assert offline.state_as_of("user", DAY2).column("score").to_pylist() == [2]


def test_local_store_is_read_in_place_and_remote_files_are_cached_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = table(user_id=[1, 2], ts=[DAY1, DAY2], score=[1.0, 2.0])
    probe = pa.table({"id": [1, 2], "at": pa.array([DAY2, DAY2], pa.timestamp("us", "UTC"))})
    refs = [FeatureRef("user")]

    local = OfflineStore(LocalObjectStore(tmp_path / "store"), cache_dir=tmp_path / "local-cache")
    local.create_group("user", "user_id", "ts")
    local.append("user", rows)
    from_local = local.build_training_set(probe, "id", "at", refs)
    assert not (tmp_path / "local-cache").exists()

    memory = InMemoryObjectStore()
    downloads: list[str] = []
    real_get_file = memory.get_file

    def counting_get_file(key: str, path: Path) -> Any:
        downloads.append(key)
        return real_get_file(key, path)

    monkeypatch.setattr(memory, "get_file", counting_get_file)
    remote = OfflineStore(memory, cache_dir=tmp_path / "remote-cache")
    remote.create_group("user", "user_id", "ts")
    remote.append("user", rows)
    first = remote.build_training_set(probe, "id", "at", refs)
    second = OfflineStore(memory, cache_dir=tmp_path / "remote-cache").build_training_set(
        probe, "id", "at", refs
    )
    assert from_local.column("user__score").to_pylist() == [1.0, 2.0]
    assert first.equals(from_local) and second.equals(from_local)
    assert len(downloads) == 2  # two files, each fetched once across both calls


def test_group_definition_is_fixed_once_created(offline: OfflineStore) -> None:
    offline.create_group("user", "user_id", "ts")  # same definition: fine
    with pytest.raises(Conflict):
        offline.create_group("user", "uid", "ts")
    with pytest.raises(NotFound):
        offline.append("nope", table(user_id=[1], ts=[DAY1]))


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        (table(user_id=[1], score=[1]), "lack the column 'ts'"),
        (table(user_id=[None, 2], ts=[DAY1, DAY1]), "has nulls"),
        (table(user_id=[1], ts=[DAY1], _deleted=[True]), "reserved"),
        (table(user_id=[1], ts=["2026-03-01"]), "timestamps"),
    ],
)
def test_bad_rows_are_refused(offline: OfflineStore, rows: pa.Table, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        offline.append("user", rows)
    assert offline.files("user") == []
