"""The contract every OnlineStore adapter passes; each adapter's test module subclasses it."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cairn.errors import InvalidInput

from services.featurestore.online import OnlineRecord, OnlineStore

T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


# How long the bulk-load test waits before calling a blocked read a deadlock: a hang guard, not a
# speed budget (a healthy read takes microseconds).
DEADLOCK_GUARD_S = 60.0


def at(seconds: float) -> datetime:
    """An event time `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


class OnlineStoreContract:
    """Subclass and override the `store` fixture with a fresh adapter instance."""

    @pytest.fixture
    def store(self) -> Iterator[OnlineStore]:
        raise NotImplementedError("each adapter's test class provides the store fixture")

    @pytest.fixture
    def group(self) -> str:
        return f"g-{uuid.uuid4().hex[:12]}"

    # GetRecord / PutRecord ---------------------------------------------------------------

    def test_put_then_get_round_trips_every_scalar_type(self, store: OnlineStore, group: str):
        values = {"age": 41, "score": 0.25, "city": "Zürich", "active": True, "note": None}
        written = datetime(2026, 11, 2, tzinfo=UTC)

        assert store.put(group, "c1", at(0), values, written_at=written) is True

        record = store.get(group, "c1")
        assert record == OnlineRecord("c1", at(0), values, written)
        assert type(record.values["active"]) is bool
        assert type(record.values["age"]) is int

    def test_missing_record_is_none(self, store: OnlineStore, group: str):
        assert store.get(group, "nobody") is None

    def test_event_time_keeps_microseconds_and_naive_means_utc(
        self, store: OnlineStore, group: str
    ):
        naive = datetime(2026, 11, 1, 12, 0, 0, 123456)
        store.put(group, "c1", naive, {"x": 1})

        record = store.get(group, "c1")
        assert record is not None
        assert record.event_time == naive.replace(tzinfo=UTC)
        assert record.written_at is not None and record.written_at.tzinfo is not None

    def test_older_event_arriving_late_never_overwrites_newer(self, store: OnlineStore, group: str):
        assert store.put(group, "c1", at(10), {"balance": 100})
        assert store.put(group, "c1", at(5), {"balance": 50}) is False

        record = store.get(group, "c1")
        assert record is not None
        assert (record.event_time, record.values) == (at(10), {"balance": 100})

    def test_newer_event_replaces_the_whole_record(self, store: OnlineStore, group: str):
        store.put(group, "c1", at(0), {"balance": 1, "segment": "gold"})
        assert store.put(group, "c1", at(1), {"balance": 2}) is True

        record = store.get(group, "c1")
        assert record is not None
        assert (record.event_time, record.values) == (at(1), {"balance": 2})

    # Ties: the later write wins, then the later record of a batch (as offline) ---------------

    def test_equal_event_time_keeps_the_later_write(self, store: OnlineStore, group: str):
        assert store.put(group, "c1", at(0), {"v": "first"})
        assert store.put(group, "c1", at(0), {"v": "second"}) is True
        assert store.put(group, "c1", at(0), {"v": "first"}) is True  # A, B, A ends at A

        record = store.get(group, "c1")
        assert record is not None and record.values == {"v": "first"}

    def test_an_earlier_write_arriving_late_loses_an_event_time_tie(
        self, store: OnlineStore, group: str
    ):
        written = datetime(2026, 11, 2, tzinfo=UTC)
        assert store.put(group, "c1", at(0), {"v": "later"}, written_at=written)
        early = written - timedelta(microseconds=1)

        assert store.put(group, "c1", at(0), {"v": "earlier"}, written_at=early) is False
        assert store.put_many(group, [OnlineRecord("c1", at(0), {"v": "x"}, early)]) == 0
        assert store.delete(group, "c1", event_time=at(0), written_at=early) is False
        record = store.get(group, "c1")
        assert record is not None and record.values == {"v": "later"}

    def test_put_many_keeps_the_later_record_of_a_batch_for_equal_event_times(
        self, store: OnlineStore, group: str
    ):
        written = datetime(2026, 11, 2, tzinfo=UTC)
        batch = [
            OnlineRecord("c1", at(0), {"v": "first"}, written),
            OnlineRecord("c2", at(0), {"v": "other"}, written),
            OnlineRecord("c1", at(0), {"v": "second"}, written),
            OnlineRecord("c1", at(0), {"v": "last"}, written),
        ]

        store.put_many(group, batch)

        records = store.get_many(group, ["c1", "c2"])
        assert [r.values["v"] if r else None for r in records] == ["last", "other"]

    def test_groups_are_isolated_and_drop_group_removes_only_one(
        self, store: OnlineStore, group: str
    ):
        other = f"{group}-other"
        store.put(group, "c1", at(0), {"v": 1})
        store.put(other, "c1", at(0), {"v": 2})
        store.delete(group, "c2", event_time=at(0))

        store.drop_group(group)

        assert store.get(group, "c1") is None
        # A dropped group forgets its tombstones too, so the id can be written again at any time.
        assert store.put(group, "c2", at(-1), {"v": 3})
        remaining = store.get(other, "c1")
        assert remaining is not None and remaining.values == {"v": 2}

    def test_bad_group_name_and_non_scalar_values_are_rejected(
        self, store: OnlineStore, group: str
    ):
        with pytest.raises(InvalidInput):
            store.put("bad:group*", "c1", at(0), {"v": 1})
        with pytest.raises(InvalidInput):
            store.put(group, "c1", at(0), {"v": [1, 2]})
        with pytest.raises(InvalidInput):
            store.put_many(group, [OnlineRecord("", at(0), {"v": 1})])
        assert store.get(group, "c1") is None

    # Features and TTL --------------------------------------------------------------------

    def test_feature_projection_returns_only_requested_features_present(
        self, store: OnlineStore, group: str
    ):
        store.put(group, "c1", at(0), {"a": 1, "b": 2, "c": 3})

        record = store.get(group, "c1", features=["c", "a", "not_a_feature"])
        assert record is not None and record.values == {"c": 3, "a": 1}
        batch = store.get_many(group, ["c1"], features=["b"])
        assert batch[0] is not None and batch[0].values == {"b": 2}

    def test_ttl_expires_records_relative_to_event_time(self, store: OnlineStore, group: str):
        store.put(group, "c1", at(0), {"v": 1})

        assert store.get(group, "c1", ttl_s=60, now=at(59.999)) is not None
        assert store.get(group, "c1", ttl_s=60, now=at(60)) is None
        assert store.get(group, "c1", now=at(10_000)) is not None  # no TTL: never expires
        assert store.get_many(group, ["c1"], ttl_s=60, now=at(61)) == [None]
        # A fresh event restarts the clock.
        store.put(group, "c1", at(100), {"v": 2})
        fresh = store.get(group, "c1", ttl_s=60, now=at(130))
        assert fresh is not None and fresh.values == {"v": 2}

    def test_ttl_defaults_to_the_current_time(self, store: OnlineStore, group: str):
        now = datetime.now(UTC)
        store.put(group, "old", now - timedelta(hours=2), {"v": 1})
        store.put(group, "new", now, {"v": 2})

        assert store.get(group, "old", ttl_s=3600) is None
        assert store.get(group, "new", ttl_s=3600) is not None

    # DeleteRecord ------------------------------------------------------------------------

    def test_delete_hides_record_and_late_older_put_does_not_resurrect_it(
        self, store: OnlineStore, group: str
    ):
        store.put(group, "c1", at(0), {"v": 1})

        assert store.delete(group, "c1", event_time=at(10)) is True
        assert store.get(group, "c1") is None
        assert store.get_many(group, ["c1"]) == [None]
        assert store.put(group, "c1", at(5), {"v": "replayed"}) is False
        written_before_the_delete = datetime(2026, 1, 1, tzinfo=UTC)
        late = OnlineRecord("c1", at(10), {"v": "same time"}, written_before_the_delete)
        assert store.put_many(group, [late]) == 0
        assert store.get(group, "c1") is None

        assert store.put(group, "c1", at(11), {"v": "reborn"}) is True
        record = store.get(group, "c1")
        assert record is not None and record.values == {"v": "reborn"}

    def test_a_put_written_after_a_delete_at_the_same_event_time_brings_the_record_back(
        self, store: OnlineStore, group: str
    ):
        store.put(group, "c1", at(0), {"v": 1})
        assert store.delete(group, "c1", event_time=at(0)) is True

        assert store.put(group, "c1", at(0), {"v": "again"}) is True
        record = store.get(group, "c1")
        assert record is not None and record.values == {"v": "again"}

    def test_delete_older_than_the_record_is_refused(self, store: OnlineStore, group: str):
        store.put(group, "c1", at(10), {"v": 1})

        assert store.delete(group, "c1", event_time=at(5)) is False
        assert store.get(group, "c1") is not None
        # A delete at the record's own event time removes it; repeating it changes nothing.
        assert store.delete(group, "c1", event_time=at(10)) is True
        assert store.delete(group, "c1", event_time=at(10)) is False
        assert store.get(group, "c1") is None

    def test_delete_before_any_put_blocks_older_events(self, store: OnlineStore, group: str):
        assert store.delete(group, "c1", event_time=at(10)) is True

        assert store.put_many(group, [OnlineRecord("c1", at(3), {"v": 1})]) == 0
        assert store.get(group, "c1") is None

    # BatchGetRecord / bulk ---------------------------------------------------------------

    def test_get_many_keeps_request_order_with_none_for_missing(
        self, store: OnlineStore, group: str
    ):
        for index in range(5):
            store.put(group, f"c{index}", at(index), {"i": index})
        store.delete(group, "c3", event_time=at(100))

        ids = ["c4", "missing", "c0", "c3", "c4", "c2"]
        records = store.get_many(group, ids)

        assert [r.record_id if r else None for r in records] == ["c4", None, "c0", None, "c4", "c2"]
        assert [r.values["i"] if r else None for r in records] == [4, None, 0, None, 4, 2]
        assert store.get_many(group, []) == []

    def test_get_many_over_a_thousand_ids(self, store: OnlineStore, group: str):
        store.put_many(group, (OnlineRecord(f"c{i}", at(0), {"i": i}) for i in range(2500)))

        ids = [f"c{i}" for i in range(2600)]
        random.Random(7).shuffle(ids)
        records = store.get_many(group, ids)

        expected = [int(i[1:]) if int(i[1:]) < 2500 else None for i in ids]
        assert [r.values["i"] if r else None for r in records] == expected

    def test_put_many_applies_newer_wins_per_record(self, store: OnlineStore, group: str):
        store.put(group, "kept", at(50), {"v": "existing newer"})
        store.put(group, "replaced", at(1), {"v": "existing older"})
        batch = [
            OnlineRecord("kept", at(10), {"v": "stale"}),
            OnlineRecord("replaced", at(20), {"v": "fresh"}),
            OnlineRecord("dup", at(30), {"v": "newest"}),
            OnlineRecord("dup", at(25), {"v": "out of order"}),
            OnlineRecord("new", at(5), {"v": "new"}),
        ]

        assert store.put_many(group, iter(batch)) == 3

        got = store.get_many(group, ["kept", "replaced", "dup", "new"])
        assert [r.values["v"] if r else None for r in got] == [
            "existing newer",
            "fresh",
            "newest",
            "new",
        ]

    # Concurrency -------------------------------------------------------------------------

    def test_concurrent_writers_keep_the_newest_event(self, store: OnlineStore, group: str):
        ids = [f"c{i}" for i in range(5)]
        stamps = list(range(400))
        random.Random(1).shuffle(stamps)
        writers = 8
        barrier = threading.Barrier(writers)
        errors: list[BaseException] = []

        def write(offset: int) -> None:
            try:
                barrier.wait()
                for stamp in stamps[offset::writers]:
                    for record_id in ids:
                        store.put(group, record_id, at(stamp), {"stamp": stamp})
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        for record in store.get_many(group, ids):
            assert record is not None
            assert (record.event_time, record.values) == (at(399), {"stamp": 399})

    def test_reads_succeed_while_a_bulk_load_runs(self, store: OnlineStore, group: str):
        """A bulk load paused halfway must not hold readers out.

        The loader's own record stream stops at the midpoint and waits for a read to succeed; a
        store that held one lock (or one blocking transaction) for the whole load would leave the
        read waiting, and the generous deadlock guard below, not a timing budget, would fail it.
        """
        store.put(group, "hot", at(0), {"v": "hot"})
        halfway, read_done = threading.Event(), threading.Event()
        bulk_stored: list[int] = []
        errors: list[BaseException] = []
        read_ok: list[bool] = []

        def records() -> Iterator[OnlineRecord]:
            for i in range(50_000):
                if i == 25_000:
                    halfway.set()
                    read_done.wait(DEADLOCK_GUARD_S)
                yield OnlineRecord(f"b{i}", at(1), {"i": i, "f": i / 3})

        def bulk_load() -> None:
            try:
                bulk_stored.append(store.put_many(group, records()))
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)

        def read_hot() -> None:
            record = store.get(group, "hot")
            if record is not None and record.values == {"v": "hot"}:
                read_ok.append(True)
            read_done.set()

        loader = threading.Thread(target=bulk_load)
        loader.start()
        assert halfway.wait(DEADLOCK_GUARD_S), "the loader never reached its midpoint"
        reader = threading.Thread(target=read_hot)
        reader.start()
        reader.join(DEADLOCK_GUARD_S)
        finished_mid_load = read_ok == [True]
        read_done.set()  # release the loader even when the read hung, so the test ends
        loader.join()
        reader.join()

        assert errors == []
        assert finished_mid_load, "the read waited for the whole load or failed"
        assert bulk_stored == [50_000]
        last = store.get(group, "b49999")
        assert last is not None and last.values == {"i": 49_999, "f": 49_999 / 3}
