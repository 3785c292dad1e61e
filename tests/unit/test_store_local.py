"""LocalObjectStore against the shared contract, plus what only a real directory can get wrong."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest
from cairn.documents import DocumentStore
from cairn.errors import Conflict, InvalidInput, PreconditionFailed
from cairn.store import LocalObjectStore, open_store

from tests.support.store_contract import Counter, ObjectStoreContract, hammer_counter_in_process


class TestLocalObjectStore(ObjectStoreContract):
    presigned_get_scheme = "file"
    presigned_put = False

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalObjectStore:
        return LocalObjectStore(tmp_path / "store")


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def test_symlinks_leading_out_of_the_root_are_refused(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not leak")
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    (store.root / "file-link").symlink_to(outside / "secret")
    for key in ["link/secret", "link/new", "file-link"]:
        with pytest.raises(InvalidInput):
            store.get_bytes(key)
        with pytest.raises(InvalidInput):
            store.put_bytes(key, b"overwrite")
    assert (outside / "secret").read_bytes() == b"do not leak"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert [info.key for info in store.list()] == []


def test_reserved_names_are_not_keys(store: LocalObjectStore) -> None:
    for key in [".cairn-meta/locks/000.lock", "a/.cairn-tmp-1-x"]:
        with pytest.raises(InvalidInput):
            store.put_bytes(key, b"x")


def test_list_never_shows_temp_lock_or_sidecar_files(store: LocalObjectStore) -> None:
    store.put_bytes("a/b.json", b"{}", if_none_match=True)
    store.put_bytes("a/b.json", b"[]", if_match=store.stat("a/b.json").etag)
    (store.root / "a" / ".cairn-tmp-999-dead-b.json").write_bytes(b"left by a crash")
    assert [info.key for info in store.list()] == ["a/b.json"]
    assert (store.root / ".cairn-meta" / "locks").is_dir()


def test_etag_follows_a_file_changed_behind_the_stores_back(store: LocalObjectStore) -> None:
    written = store.put_bytes("data.bin", b"original")
    assert store.stat("data.bin").etag == written.etag
    (store.root / "data.bin").write_bytes(b"edited in place by hand")
    assert store.stat("data.bin").etag == hashlib.md5(b"edited in place by hand").hexdigest()
    with pytest.raises(PreconditionFailed):
        store.put_bytes("data.bin", b"x", if_match=written.etag)


def test_a_key_cannot_be_both_an_object_and_a_folder(store: LocalObjectStore) -> None:
    store.put_bytes("models/m", b"object")
    with pytest.raises(Conflict):
        store.put_bytes("models/m/1", b"nested")
    assert store.get_bytes("models/m") == b"object"


def test_failed_write_leaves_the_old_content_and_no_temp_file(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    store.put_bytes("k", b"old")
    with pytest.raises(FileNotFoundError):
        store.put_file("k", tmp_path / "no-such-file")
    assert store.get_bytes("k") == b"old"
    assert sorted(os.listdir(store.root)) == [".cairn-meta", "k"]


def _create_in_child(root: str, writer: str, start: multiprocessing.synchronize.Event) -> str:
    start.wait()
    try:
        LocalObjectStore(Path(root)).put_bytes("race/key", writer.encode(), if_none_match=True)
    except PreconditionFailed:
        return "lost"
    return "won"


def test_create_only_has_one_winner_across_processes(store: LocalObjectStore) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(2) as pool:
            pending = [
                pool.apply_async(_create_in_child, (str(store.root), f"p{i}", start))
                for i in range(6)
            ]
            start.set()
            results = [p.get(timeout=60) for p in pending]
    assert results.count("won") == 1
    assert store.get_bytes("race/key").decode() in {f"p{i}" for i in range(6)}


def test_document_updates_from_several_processes_lose_nothing(store: LocalObjectStore) -> None:
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=hammer_counter_in_process, args=(store.url, "counter.json", f"p{i}", 2, 25)
        )
        for i in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    counter = DocumentStore(open_store(store.url), Counter).get("counter.json").doc
    assert counter.value == 100
    assert sorted(set(counter.writers)) == ["p0-t0", "p0-t1", "p1-t0", "p1-t1"]
