"""DocumentStore: typed JSON documents with optimistic concurrency, on the in-memory store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from cairn.documents import DocumentStore
from cairn.errors import CairnError, ObjectNotFound, PreconditionFailed
from cairn.store import InMemoryObjectStore
from pydantic import BaseModel


class Job(BaseModel):
    job_id: str
    status: str = "pending"
    attempts: int = 0


@pytest.fixture
def store() -> InMemoryObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
def jobs(store: InMemoryObjectStore) -> DocumentStore[Job]:
    return DocumentStore(store, Job, prefix="jobs/")


def test_create_then_get_returns_the_document_and_its_etag(
    jobs: DocumentStore[Job], store: InMemoryObjectStore
) -> None:
    created = jobs.create("j1.json", Job(job_id="j1"))
    got = jobs.get("j1.json")
    assert got.doc == Job(job_id="j1")
    assert got.etag == created.etag
    assert store.stat("jobs/j1.json").content_type == "application/json"


def test_create_refuses_to_overwrite(jobs: DocumentStore[Job]) -> None:
    jobs.create("j1.json", Job(job_id="j1", status="running"))
    with pytest.raises(PreconditionFailed):
        jobs.create("j1.json", Job(job_id="j1"))
    assert jobs.get("j1.json").doc.status == "running"


def test_replace_with_a_stale_etag_fails(jobs: DocumentStore[Job]) -> None:
    first = jobs.create("j1.json", Job(job_id="j1"))
    second = jobs.replace("j1.json", Job(job_id="j1", status="running"), first.etag)
    with pytest.raises(PreconditionFailed):
        jobs.replace("j1.json", Job(job_id="j1", status="failed"), first.etag)
    assert jobs.get("j1.json") == second


def test_missing_documents(jobs: DocumentStore[Job]) -> None:
    assert jobs.get_or_none("nope.json") is None
    with pytest.raises(ObjectNotFound):
        jobs.get("nope.json")
    jobs.delete("nope.json")


def test_update_creates_when_absent_then_modifies(jobs: DocumentStore[Job]) -> None:
    def start(job: Job | None) -> Job:
        job = job or Job(job_id="j2")
        return job.model_copy(update={"status": "running", "attempts": job.attempts + 1})

    jobs.update("j2.json", start)
    jobs.update("j2.json", start)
    assert jobs.get("j2.json").doc == Job(job_id="j2", status="running", attempts=2)


def test_update_that_changes_nothing_writes_nothing(jobs: DocumentStore[Job]) -> None:
    created = jobs.create("j3.json", Job(job_id="j3"))
    same = jobs.update("j3.json", lambda job: job or Job(job_id="x"))
    assert same.etag == created.etag
    assert jobs.get("j3.json").etag == created.etag


def test_update_retries_after_losing_a_race(jobs: DocumentStore[Job]) -> None:
    jobs.create("j4.json", Job(job_id="j4"))
    interferences = 0

    def bump_with_interference(job: Job | None) -> Job:
        nonlocal interferences
        assert job is not None
        if interferences < 3:  # another writer sneaks in between our read and our write
            interferences += 1
            current = jobs.get("j4.json")
            jobs.replace("j4.json", current.doc.model_copy(update={"status": "x"}), current.etag)
        return job.model_copy(update={"attempts": job.attempts + 1})

    result = jobs.update("j4.json", bump_with_interference)
    assert result.doc == Job(job_id="j4", status="x", attempts=1)
    assert jobs.get("j4.json").doc == result.doc


def test_update_gives_up_after_max_attempts(jobs: DocumentStore[Job]) -> None:
    jobs.create("j5.json", Job(job_id="j5"))
    calls = 0

    def always_interfered(job: Job | None) -> Job:
        nonlocal calls
        calls += 1
        current = jobs.get("j5.json")
        jobs.replace("j5.json", current.doc.model_copy(update={"attempts": calls}), current.etag)
        return Job(job_id="j5", status="mine")

    with pytest.raises(PreconditionFailed):
        jobs.update("j5.json", always_interfered, max_attempts=4, backoff_s=0.001)
    assert calls == 4
    assert jobs.get("j5.json").doc.status == "pending"


def test_concurrent_updates_count_every_increment(jobs: DocumentStore[Job]) -> None:
    def bump(job: Job | None) -> Job:
        job = job or Job(job_id="shared")
        return job.model_copy(update={"attempts": job.attempts + 1})

    def worker() -> None:
        for _ in range(25):
            jobs.update("shared.json", bump)

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(worker) for _ in range(4)]:
            future.result()
    assert jobs.get("shared.json").doc.attempts == 100


def test_list_and_keys_are_relative_to_the_prefix_and_ordered(
    jobs: DocumentStore[Job], store: InMemoryObjectStore
) -> None:
    for job_id in ["b", "a", "c"]:
        jobs.create(f"{job_id}.json", Job(job_id=job_id))
    store.put_bytes("other/z.json", b"{}")
    assert jobs.keys() == ["a.json", "b.json", "c.json"]
    assert [v.doc.job_id for v in jobs.list()] == ["a", "b", "c"]
    assert [v.key for v in jobs.list("b")] == ["b.json"]


def test_a_corrupt_document_is_reported_not_silently_replaced(
    jobs: DocumentStore[Job], store: InMemoryObjectStore
) -> None:
    store.put_bytes("jobs/bad.json", b'{"status": 3}')
    with pytest.raises(CairnError, match="not a valid Job"):
        jobs.get("bad.json")
    with pytest.raises(CairnError, match="not a valid Job"):
        jobs.update("bad.json", lambda job: Job(job_id="new"))
    assert store.get_bytes("jobs/bad.json") == b'{"status": 3}'


def test_top_level_lists_the_folder_itself_and_skips_what_it_cannot_read(
    jobs: DocumentStore[Job], store: InMemoryObjectStore
) -> None:
    for job_id in ["b", "a"]:
        jobs.create(f"{job_id}.json", Job(job_id=job_id))
    jobs.create("a/attempt-1.json", Job(job_id="inner"))  # a job's own sub-folder
    store.put_bytes("jobs/a/log.txt", b"log")
    store.put_bytes("jobs/bad.json", b'{"status": 3}')
    assert [job.job_id for job in jobs.top_level()] == ["a", "b"]
