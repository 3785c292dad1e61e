"""Point-in-time training sets: exact against a brute-force reference; the future never leaks."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pyarrow as pa
import pytest
from cairn.errors import InvalidInput
from cairn.store import InMemoryObjectStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.featurestore.offline import FeatureRef, OfflineStore, pit

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Clock:
    """A write-time clock the test sets by hand, to stage late-arriving data."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(at(0))


@pytest.fixture
def offline(tmp_path: Path, clock: Clock) -> OfflineStore:
    store = OfflineStore(InMemoryObjectStore(), cache_dir=tmp_path / "cache", clock=clock)
    store.create_group("user", "user_id", "ts")
    return store


def rows(**columns: list[Any]) -> pa.Table:
    return pa.table(columns)


def entity(ids: list[Any], times: list[datetime], **extra: list[Any]) -> pa.Table:
    return pa.table({"user_id": ids, "at": pa.array(times, pa.timestamp("us", "UTC")), **extra})


def features(
    store: OfflineStore, entity_table: pa.Table, *, known: bool = False, **ref: Any
) -> list[Any]:
    out = store.build_training_set(
        entity_table,
        "user_id",
        "at",
        [FeatureRef("user", ("score",), **ref)],
        as_of_known_time=known,
    )
    return out.column("user__score").to_pylist()


# Brute-force reference -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    record_id: int
    event_time: datetime
    write_time: datetime
    deleted: bool
    score: float | None


def reference(
    history: list[Row], probes: list[tuple[int, datetime]], ttl_s: float | None, known: bool
) -> list[float | None]:
    """Per probe, the latest applicable row by (event time, write time); None if none or deleted."""
    out: list[float | None] = []
    for record_id, ts in probes:
        usable = [
            row
            for row in history
            if row.record_id == record_id
            and row.event_time <= ts
            and (ttl_s is None or row.event_time >= ts - timedelta(seconds=ttl_s))
            and (not known or row.write_time <= ts)
        ]
        best = max(usable, key=lambda row: (row.event_time, row.write_time), default=None)
        out.append(None if best is None or best.deleted else best.score)
    return out


# A batch: distinct (id, minute) pairs with scores; a delete: (id, minute).
batches = st.lists(
    st.dictionaries(
        st.tuples(st.integers(0, 3), st.integers(0, 40)),
        st.floats(-1e6, 1e6, allow_nan=False),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=5,
)
operations = st.lists(
    st.one_of(
        batches.map(lambda b: ("append", b)),
        st.tuples(st.integers(0, 3), st.integers(0, 40)).map(lambda d: ("delete", d)),
    ),
    min_size=1,
    max_size=6,
)
probes = st.lists(st.tuples(st.integers(0, 4), st.integers(-5, 50)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=operations,
    probe_list=probes,
    ttl_minutes=st.one_of(st.none(), st.integers(1, 30)),
    known=st.booleans(),
    row_key=st.booleans(),
)
def test_training_set_equals_brute_force_reference(
    ops: list[tuple[str, Any]],
    probe_list: list[tuple[int, int]],
    ttl_minutes: int | None,
    known: bool,
    row_key: bool,
) -> None:
    # row_key: force the (event time, write time) ASOF key used when too many files need a rank.
    ranked_limit = 0 if row_key else pit._MAX_RANKED_FILES
    with (
        tempfile.TemporaryDirectory() as cache,
        patch.object(pit, "_MAX_RANKED_FILES", ranked_limit),
    ):
        # Writes happen at minutes 0, 5, 10, ... so some are later than some entity times.
        clock = Clock(at(0))
        store = OfflineStore(InMemoryObjectStore(), cache_dir=Path(cache), clock=clock)
        store.create_group("user", "user_id", "ts")
        history: list[Row] = []
        for step, (kind, payload) in enumerate(ops):
            clock.now = at(step * 5)
            if kind == "delete":
                record_id, minute = payload
                store.delete("user", record_id, at(minute))
                history.append(Row(record_id, at(minute), at(step * 5), True, None))
                continue
            for batch in payload:
                ids = [key[0] for key in batch]
                times = [at(key[1]) for key in batch]
                store.append("user", rows(user_id=ids, ts=times, score=list(batch.values())))
                written = store._last_write_time  # the write time the store actually stamped
                history += [
                    Row(i, t, written, False, s)
                    for i, t, s in zip(ids, times, batch.values(), strict=True)
                ]
        probe_times = [(record_id, at(minute)) for record_id, minute in probe_list]
        ttl_s = None if ttl_minutes is None else ttl_minutes * 60.0
        got = features(
            store,
            entity([p[0] for p in probe_times], [p[1] for p in probe_times]),
            known=known,
            ttl_s=ttl_s,
        )
        assert got == reference(history, probe_times, ttl_s, known)


def test_future_feature_values_never_leak_into_the_training_set(offline: OfflineStore) -> None:
    offline.append("user", rows(user_id=[1, 1], ts=[at(0), at(10)], score=[1.0, 99.0]))
    got = features(offline, entity([1, 1, 1], [at(9), at(9) + timedelta(seconds=59), at(10)]))
    # 99.0 has event time minute 10: invisible one microsecond before, visible exactly at it.
    assert got == [1.0, 1.0, 99.0]
    just_before = features(offline, entity([1], [at(10) - timedelta(microseconds=1)]))
    assert just_before == [1.0]


def test_late_arriving_data_is_ignored_when_joining_as_of_known_time(
    offline: OfflineStore, clock: Clock
) -> None:
    clock.now = at(0)
    offline.append("user", rows(user_id=[7], ts=[at(0)], score=[1.0]))
    # Event at minute 5, but it only arrived at minute 60: unknown to a prediction at minute 30.
    clock.now = at(60)
    offline.append("user", rows(user_id=[7], ts=[at(5)], score=[2.0]))
    probe = entity([7, 7], [at(30), at(90)])
    assert features(offline, probe, known=False) == [2.0, 2.0]
    assert features(offline, probe, known=True) == [1.0, 2.0]


def test_ttl_drops_values_older_than_the_window(offline: OfflineStore) -> None:
    offline.append("user", rows(user_id=[1], ts=[at(0)], score=[5.0]))
    probe = entity([1, 1, 1], [at(0), at(10), at(11)])
    assert features(offline, probe, ttl_s=600) == [5.0, 5.0, None]
    assert features(offline, probe, ttl_s=600, known=True) == [5.0, 5.0, None]
    assert features(offline, probe) == [5.0, 5.0, 5.0]


def test_tombstone_hides_a_record_from_its_event_time_on(offline: OfflineStore) -> None:
    offline.append("user", rows(user_id=[1, 2], ts=[at(0), at(0)], score=[1.0, 2.0]))
    offline.delete("user", 1, at(10))
    probe = entity([1, 1, 2], [at(5), at(10), at(20)])
    assert features(offline, probe) == [1.0, None, 2.0]
    offline.append("user", rows(user_id=[1], ts=[at(15)], score=[3.0]))
    assert features(offline, entity([1, 1], [at(12), at(15)])) == [None, 3.0]


def test_same_event_time_is_resolved_by_the_latest_write(
    offline: OfflineStore, clock: Clock
) -> None:
    offline.append("user", rows(user_id=[1], ts=[at(0)], score=[1.0]))
    clock.now = at(1)
    offline.append("user", rows(user_id=[1], ts=[at(0)], score=[1.5]))  # a correction
    assert features(offline, entity([1], [at(2)])) == [1.5]
    # Before the correction was written, only the original was known.
    assert features(offline, entity([1], [at(0)]), known=True) == [1.0]


def test_rows_without_history_are_kept_with_nulls_in_entity_order(offline: OfflineStore) -> None:
    offline.append("user", rows(user_id=[1, 2], ts=[at(0), at(0)], score=[1.0, 2.0]))
    probe = entity([2, 9, 1, 1, 2], [at(1), at(1), at(-1), at(3), at(0)], label=[1, 0, 1, 0, 1])
    out = offline.build_training_set(probe, "user_id", "at", [FeatureRef("user")])
    assert out.num_rows == 5
    assert out.column_names == ["user_id", "at", "label", "user__score"]
    assert out.column("label").to_pylist() == [1, 0, 1, 0, 1]
    assert out.column("user_id").to_pylist() == [2, 9, 1, 1, 2]
    assert out.column("user__score").to_pylist() == [2.0, None, None, 1.0, 2.0]


def test_several_groups_and_custom_column_names(offline: OfflineStore) -> None:
    offline.create_group("txn", "account", "event_time")
    offline.append("user", rows(user_id=[1], ts=[at(0)], score=[1.0], age=[30]))
    offline.append("txn", rows(account=[1], event_time=[at(2)], amount=[12.5], fee=[0.1]))
    out = offline.build_training_set(
        entity([1, 1], [at(1), at(3)]),
        "user_id",
        "at",
        [FeatureRef("user", ("age",), column_prefix=""), FeatureRef("txn", ("amount",))],
    )
    assert out.column_names == ["user_id", "at", "age", "txn__amount"]
    assert out.column("age").to_pylist() == [30, 30]
    assert out.column("txn__amount").to_pylist() == [None, 12.5]


def test_naive_entity_timestamps_are_read_as_utc(offline: OfflineStore) -> None:
    offline.append("user", rows(user_id=[1], ts=[at(10)], score=[4.0]))
    naive = pa.table({"user_id": [1, 1], "at": pa.array([at(9), at(10)]).cast(pa.timestamp("us"))})
    assert features(offline, naive) == [None, 4.0]


def test_far_future_entity_times_see_the_latest_values(offline: OfflineStore) -> None:
    offline.append("user", rows(user_id=[1, 1], ts=[at(0), at(5)], score=[1.0, 2.0]))
    assert features(offline, entity([1], [datetime(9999, 12, 31, tzinfo=UTC)])) == [2.0]


def test_entity_rows_missing_an_id_or_time_get_nulls_not_the_latest_values(
    offline: OfflineStore,
) -> None:
    offline.append("user", rows(user_id=[1], ts=[at(0)], score=[1.0]))
    probe = pa.table(
        {"user_id": [1, None, 1], "at": pa.array([None, at(5), at(5)], pa.timestamp("us", "UTC"))}
    )
    assert features(offline, probe) == [None, None, 1.0]
    assert features(offline, probe, known=True) == [None, None, 1.0]


def test_clashing_output_columns_are_refused(offline: OfflineStore) -> None:
    offline.append("user", rows(user_id=[1], ts=[at(0)], score=[1.0]))
    clash = entity([1], [at(1)], user__score=[0.0])
    with pytest.raises(InvalidInput, match="repeat"):
        offline.build_training_set(clash, "user_id", "at", [FeatureRef("user")])
