"""The one behaviour every ObjectStore adapter must show; each adapter's tests subclass it.

A subclass provides a `store` fixture giving an empty store, and says which presigned URLs its
adapter serves (`presigned_get_scheme`, `presigned_put`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import pytest
from cairn.documents import DocumentStore
from cairn.errors import InvalidInput, ObjectNotFound, PreconditionFailed
from cairn.store import ObjectStore, open_store
from pydantic import BaseModel

BAD_KEYS = ["", "/etc/passwd", "../escape", "a/../../escape", "a/./b", "a//b", "a\\b", "a/..", "a/"]


class Counter(BaseModel):
    """A document many writers increment; its final value exposes any lost update."""

    value: int = 0
    writers: list[str] = []


def increment(counter: Counter | None, writer: str) -> Counter:
    current = counter or Counter()
    return Counter(value=current.value + 1, writers=[*current.writers, writer])


def hammer_counter(documents: DocumentStore[Counter], key: str, writer: str, times: int) -> None:
    for _ in range(times):
        documents.update(key, lambda counter: increment(counter, writer))


def hammer_counter_in_process(
    store_url: str, key: str, writer: str, threads: int, times: int
) -> None:
    """Entry point of a child process: `threads` threads each increment `times` times."""
    documents = DocumentStore(open_store(store_url), Counter)
    with ThreadPoolExecutor(threads) as pool:
        futures = [
            pool.submit(hammer_counter, documents, key, f"{writer}-t{index}", times)
            for index in range(threads)
        ]
        for future in futures:
            future.result()


def race(workers: int, attempt: Callable[[int], object]) -> list[object]:
    """Start `workers` calls of `attempt` as close together as possible; return results/errors."""
    barrier = threading.Barrier(workers)

    def run(index: int) -> object:
        barrier.wait()
        try:
            return attempt(index)
        except PreconditionFailed as exc:
            return exc

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(workers)))


class ObjectStoreContract:
    """Tests every adapter passes; subclasses provide the `store` fixture."""

    presigned_get_scheme: str | None = None  # "file", "http" or None when unsupported
    presigned_put: bool = False
    large_file_size: int = 3 * 1024 * 1024 + 17

    # Round trips -----------------------------------------------------------------------------

    def test_put_then_get_returns_the_same_bytes_and_md5_etag(self, store: ObjectStore) -> None:
        data = bytes(range(256)) * 4
        written = store.put_bytes("models/credit/3/weights.bin", data)
        assert store.get_bytes("models/credit/3/weights.bin") == data
        assert written.etag == hashlib.md5(data).hexdigest()
        assert written.size == len(data)

    def test_stat_reports_size_etag_and_content_type(self, store: ObjectStore) -> None:
        written = store.put_bytes("docs/a.json", b'{"a": 1}', content_type="application/json")
        info = store.stat("docs/a.json")
        assert (info.key, info.size, info.etag) == ("docs/a.json", 8, written.etag)
        assert info.content_type == "application/json"
        assert info.last_modified is not None

    def test_overwrite_changes_content_and_etag(self, store: ObjectStore) -> None:
        first = store.put_bytes("k", b"one")
        second = store.put_bytes("k", b"two")
        assert first.etag != second.etag
        data, info = store.get_with_info("k")
        assert (data, info.etag) == (b"two", second.etag)

    def test_iter_chunks_streams_the_whole_object(self, store: ObjectStore) -> None:
        data = os.urandom(100_003)
        store.put_bytes("stream/blob", data)
        chunks = list(store.iter_chunks("stream/blob", chunk_size=10_000))
        assert b"".join(chunks) == data
        assert len(chunks) >= 10

    # Ranged reads ----------------------------------------------------------------------------

    def test_get_range_returns_exactly_the_bytes_asked_for(self, store: ObjectStore) -> None:
        data = os.urandom(70_001)
        store.put_bytes("ranged/blob", data)
        for start, end in [(0, 1), (0, 70_001), (17, 4_113), (65_536, 70_001), (70_000, 70_001)]:
            assert store.get_range("ranged/blob", start, end) == data[start:end]
        pieces = [store.get_range("ranged/blob", s, s + 9_999) for s in range(0, len(data), 9_999)]
        assert b"".join(pieces) == data  # consecutive ranges tile the object

    def test_get_range_past_the_end_is_cut_at_the_end(self, store: ObjectStore) -> None:
        store.put_bytes("ranged/short", b"0123456789")
        store.put_bytes("ranged/empty", b"")
        assert store.get_range("ranged/short", 6, 1_000) == b"6789"
        assert store.get_range("ranged/short", 10, 20) == b""
        assert store.get_range("ranged/short", 50, 60) == b""
        assert store.get_range("ranged/short", 3, 3) == b""
        assert store.get_range("ranged/empty", 0, 8) == b""

    def test_get_range_of_a_missing_key_or_a_bad_range_is_refused(self, store: ObjectStore) -> None:
        store.put_bytes("ranged/there", b"abc")
        for start, end in [(0, 4), (2, 2)]:
            with pytest.raises(ObjectNotFound):
                store.get_range("ranged/missing", start, end)
        for start, end in [(-1, 2), (2, 1)]:
            with pytest.raises(InvalidInput):
                store.get_range("ranged/there", start, end)
        with pytest.raises(InvalidInput):
            store.get_range("../escape", 0, 1)

    def test_put_file_and_get_file_round_trip_a_large_file(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        source = tmp_path / "source.bin"
        source.write_bytes(os.urandom(self.large_file_size))
        put = store.put_file("datasets/big.bin", source)
        target = tmp_path / "out" / "copy.bin"
        got = store.get_file("datasets/big.bin", target)
        assert target.read_bytes() == source.read_bytes()
        assert put.size == got.size == self.large_file_size
        assert got.etag == store.stat("datasets/big.bin").etag
        assert sorted(p.name for p in target.parent.iterdir()) == ["copy.bin"]  # no temp left

    # Listing and deleting --------------------------------------------------------------------

    def test_list_returns_keys_in_order_filtered_by_prefix(self, store: ObjectStore) -> None:
        for key in ["b/2", "a/1", "a-c", "a/0/x", "ab", "a/1b"]:
            store.put_bytes(key, key.encode())
        assert [i.key for i in store.list()] == ["a-c", "a/0/x", "a/1", "a/1b", "ab", "b/2"]
        assert [i.key for i in store.list("a/")] == ["a/0/x", "a/1", "a/1b"]
        assert [i.key for i in store.list("a/1")] == ["a/1", "a/1b"]
        assert [i.key for i in store.list("a/", recursive=False)] == ["a/1", "a/1b"]
        assert list(store.list("nothing/")) == []
        sizes = {i.key: i.size for i in store.list("b/")}
        assert sizes == {"b/2": 3}

    def test_delete_removes_the_object_and_tolerates_missing_keys(self, store: ObjectStore) -> None:
        store.put_bytes("tmp/x/y", b"1")
        store.put_bytes("tmp/z", b"2")
        store.delete("tmp/x/y")
        store.delete("tmp/x/y")
        store.delete("never/was")
        assert not store.exists("tmp/x/y")
        assert store.exists("tmp/z")
        assert [i.key for i in store.list()] == ["tmp/z"]
        store.put_bytes("tmp/x/y", b"again")  # the emptied folder can be written again
        assert store.get_bytes("tmp/x/y") == b"again"

    # Missing keys and bad keys ---------------------------------------------------------------

    def test_reading_a_missing_key_raises_object_not_found(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        store.put_bytes("present/one", b"1")
        reads: list[Callable[[], object]] = [
            lambda: store.get_bytes("missing"),
            lambda: store.get_with_info("present/missing"),
            lambda: store.stat("missing"),
            lambda: store.get_file("missing", tmp_path / "f"),
            lambda: store.iter_chunks("missing"),
            lambda: store.get_bytes("present"),  # a folder of keys is not an object
        ]
        for read in reads:
            with pytest.raises(ObjectNotFound):
                read()
        assert not store.exists("missing")
        assert not (tmp_path / "f").exists()

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_keys_that_could_escape_or_are_ambiguous_are_rejected(
        self, store: ObjectStore, key: str
    ) -> None:
        with pytest.raises(InvalidInput):
            store.put_bytes(key, b"x")
        with pytest.raises(InvalidInput):
            store.get_bytes(key)
        with pytest.raises(InvalidInput):
            store.delete(key)
        assert list(store.list()) == []

    # Conditional writes ----------------------------------------------------------------------

    def test_create_only_refuses_an_existing_key(self, store: ObjectStore) -> None:
        store.put_bytes("jobs/1.json", b"first", if_none_match=True)
        with pytest.raises(PreconditionFailed):
            store.put_bytes("jobs/1.json", b"second", if_none_match=True)
        assert store.get_bytes("jobs/1.json") == b"first"

    def test_if_match_replaces_only_the_version_it_names(self, store: ObjectStore) -> None:
        v1 = store.put_bytes("doc", b"v1")
        v2 = store.put_bytes("doc", b"v2", if_match=v1.etag)
        with pytest.raises(PreconditionFailed):
            store.put_bytes("doc", b"stale", if_match=v1.etag)
        with pytest.raises(PreconditionFailed):
            store.put_bytes("absent", b"x", if_match=v1.etag)
        assert store.get_bytes("doc") == b"v2"
        assert store.stat("doc").etag == v2.etag
        assert not store.exists("absent")

    def test_racing_creates_have_exactly_one_winner(self, store: ObjectStore) -> None:
        for round_number in range(5):
            key = f"race/create-{round_number}"
            results = race(
                8, lambda i, key=key: store.put_bytes(key, f"w{i}".encode(), if_none_match=True)
            )
            winners = [i for i, r in enumerate(results) if not isinstance(r, PreconditionFailed)]
            assert len(winners) == 1
            assert store.get_bytes(key) == f"w{winners[0]}".encode()

    def test_racing_compare_and_swaps_have_exactly_one_winner(self, store: ObjectStore) -> None:
        for round_number in range(5):
            key = f"race/cas-{round_number}"
            base = store.put_bytes(key, b"base")
            results = race(
                8,
                lambda i, key=key, etag=base.etag: store.put_bytes(
                    key, f"w{i}".encode(), if_match=etag
                ),
            )
            winners = [i for i, r in enumerate(results) if not isinstance(r, PreconditionFailed)]
            assert len(winners) == 1
            assert store.get_bytes(key) == f"w{winners[0]}".encode()

    def test_concurrent_document_updates_lose_nothing(self, store: ObjectStore) -> None:
        documents = DocumentStore(store, Counter, prefix="counters")
        with ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(hammer_counter, documents, "shared.json", f"t{i}", 25) for i in range(4)
            ]
            for future in futures:
                future.result()
        counter = documents.get("shared.json").doc
        assert counter.value == 100
        assert sorted(set(counter.writers)) == ["t0", "t1", "t2", "t3"]
        assert all(counter.writers.count(f"t{i}") == 25 for i in range(4))

    # URLs ------------------------------------------------------------------------------------

    def test_presigned_get_url_serves_the_object(self, store: ObjectStore) -> None:
        store.put_bytes("share/report.txt", b"drift report")
        if self.presigned_get_scheme is None:
            with pytest.raises(NotImplementedError, match=type(store).__name__):
                store.presigned_get_url("share/report.txt")
            return
        url = store.presigned_get_url("share/report.txt", expires_s=60)
        assert urlsplit(url).scheme == self.presigned_get_scheme
        if self.presigned_get_scheme == "file":
            assert Path(url2pathname(urlsplit(url).path)).read_bytes() == b"drift report"
        else:
            response = httpx.get(url)
            assert response.status_code == 200
            assert response.content == b"drift report"

    def test_presigned_put_url_accepts_an_upload(self, store: ObjectStore) -> None:
        if not self.presigned_put:
            with pytest.raises(NotImplementedError, match=type(store).__name__):
                store.presigned_put_url("upload/data.csv")
            return
        url = store.presigned_put_url("upload/data.csv", expires_s=60)
        response = httpx.put(
            url, content=b"a,b\n1,2\n", headers={"Content-Type": "application/octet-stream"}
        )
        assert response.status_code == 200, response.text
        assert store.get_bytes("upload/data.csv") == b"a,b\n1,2\n"

    def test_uri_names_the_object_under_the_store_url(self, store: ObjectStore) -> None:
        assert (
            store.uri("models/m/1/model.json") == f"{store.url.rstrip('/')}/models/m/1/model.json"
        )
        with pytest.raises(InvalidInput):
            store.uri("../x")
