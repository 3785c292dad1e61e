"""The online-store contract on the SQLite adapter (the embedded default), plus durability."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from services.featurestore.online import OnlineStore, open_online_store
from services.featurestore.online.sqlite import SqliteOnlineStore
from tests.support.online_contract import OnlineStoreContract, at


class TestSqliteOnlineStore(OnlineStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[OnlineStore]:
        with open_online_store(f"sqlite:///{tmp_path}/online.db") as store:
            assert isinstance(store, SqliteOnlineStore)
            yield store


def test_records_survive_reopening_the_file(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/nested/dir/online.db"
    with open_online_store(url) as store:
        store.put("users", "u1", at(10), {"v": 1})
        store.delete("users", "u2", event_time=at(10))

    with open_online_store(url) as reopened:
        record = reopened.get("users", "u1")
        assert record is not None and record.values == {"v": 1}
        assert reopened.put("users", "u2", at(5), {"v": "late"}) is False


def test_file_is_in_wal_mode_so_readers_do_not_block_on_writers(tmp_path: Path):
    with (
        open_online_store(f"sqlite:///{tmp_path}/online.db"),
        closing(sqlite3.connect(tmp_path / "online.db")) as raw,
    ):
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_two_store_instances_on_one_file_still_keep_the_newest(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/online.db"
    with open_online_store(url) as first, open_online_store(url) as second:
        assert first.put("users", "u1", at(10), {"by": "first"})
        assert second.put("users", "u1", at(9), {"by": "second"}) is False
        record = second.get("users", "u1")
        assert record is not None and record.values == {"by": "first"}


def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    with open_online_store("sqlite:///state/online.db") as store:
        store.put("users", "u1", at(0), {"v": 1})
    assert (tmp_path / "state" / "online.db").is_file()
