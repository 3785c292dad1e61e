"""A labeling service killed with SIGKILL mid-job loses no acknowledged answer and doubles none.

The service runs as its own process (`python -m services.labeling`) on the real broker and a local
store; the ingest service runs in the test. Answers are given, the process is killed, a new one
starts, the last answer is sent again (refused: already answered) and the job is finished. The
sentinel is the registered labels dataset: every item has exactly its three answers. Long (two
starts of the service); the default run has tests/integration/test_labeling_crash.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.datasets import data_keys, resolve_dataset_uri, write_dataset_version
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from pydantic import SecretStr

from services.ingest.app import create_service as create_ingest
from tests.support.auth import PLATFORM_KEY, admin_headers
from tests.support.http_server import served
from tests.support.labeling_stack import HANG_GUARD_S
from tests.support.service_process import ServiceProcess
from tests.support.tansu import unique_name

pytestmark = [pytest.mark.integration, pytest.mark.long]
ITEMS = 6


@pytest.fixture
def settings(kafka_settings: CairnSettings, tmp_path: Path) -> CairnSettings:
    return kafka_settings.model_copy(
        update={"platform_key": SecretStr(PLATFORM_KEY), "store_url": f"file://{tmp_path}/store"}
    )


@pytest.fixture
def labeling(settings: CairnSettings, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        "labeling",
        settings,
        tmp_path / "labeling.log",
        env={"CAIRN_LABELING_SWEEP_INTERVAL_S": "0.1"},
        hang_guard_s=HANG_GUARD_S,
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def store(settings: CairnSettings) -> AsyncIterator[ObjectStore]:
    opened = open_store(settings=settings)
    async with served(create_ingest(settings, opened).asgi, "ingest"):
        yield opened


async def answer(client: httpx.AsyncClient, job: str) -> str | None:
    """Claim the next task and answer it with the item's truth; the item id, None when done."""
    task = (await client.post(f"/labeling-jobs/{job}/tasks/next")).json()["task"]
    if task is None:
        return None
    given = await client.post(
        f"/labeling-jobs/{job}/tasks/{task['item_id']}/answer",
        json={"label": task["fields"]["truth"]},
    )
    assert given.status_code == 201, given.text
    return str(task["item_id"])


async def wait_completed(client: httpx.AsyncClient, job: str) -> dict[str, object]:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        found = await client.get(f"/labeling-jobs/{job}")
        if found.status_code == 200 and found.json()["status"] in ("Completed", "Failed"):
            return dict(found.json())
        assert time.monotonic() < deadline, found.text
        await asyncio.sleep(0.1)


def labelled_rows(store: ObjectStore, uri: str) -> list[dict[str, object]]:
    resolved = resolve_dataset_uri(store, uri)
    path = store.uri(data_keys(resolved.version)[0]).removeprefix("file://")
    return list(pq.read_table(path).to_pylist())


async def test_kill_mid_job_loses_and_doubles_no_answer(
    settings: CairnSettings, store: ObjectStore, labeling: ServiceProcess
) -> None:
    admin = admin_headers(store, settings)
    truth = ["cat", "dog"] * (ITEMS // 2)
    name = unique_name("pets")
    version, _ = write_dataset_version(
        store, name, pa.table({"text": [f"pet {i}" for i in range(ITEMS)], "truth": truth})
    )
    await asyncio.to_thread(labeling.start)
    async with httpx.AsyncClient(base_url=labeling.url, headers=admin, timeout=30) as client:
        made = await client.post(
            "/workforces", json={"workforce_name": "kill-crowd", "members": ["ann", "bob", "cy"]}
        )
        tokens = made.json()["tokens"]
        job = unique_name("kill")
        created = await client.post(
            "/labeling-jobs",
            json={
                "job_name": job,
                "dataset_uri": f"dataset://{name}@{version.version}",
                "task_type": "text-classification",
                "labels": ["cat", "dog"],
                "workforce_name": "kill-crowd",
            },
        )
        assert created.status_code == 202, created.text
        deadline = time.monotonic() + HANG_GUARD_S
        while (await client.get(f"/labeling-jobs/{job}")).json().get("status") != "InProgress":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    def annotator(who: str) -> httpx.AsyncClient:
        bearer = {"Authorization": f"Bearer {tokens[who]}"}
        return httpx.AsyncClient(base_url=labeling.url, headers=bearer, timeout=30)

    async with annotator("ann") as ann:
        while await answer(ann, job) is not None:
            pass
    async with annotator("bob") as bob:
        last = [await answer(bob, job) for _ in range(ITEMS // 2)][-1]

    await asyncio.to_thread(labeling.kill)
    await asyncio.to_thread(labeling.start)

    async with annotator("bob") as bob:
        again = await bob.post(f"/labeling-jobs/{job}/tasks/{last}/answer", json={"label": "cat"})
        assert again.status_code == 409 and again.json()["code"] == "already_answered"
        while await answer(bob, job) is not None:
            pass
    async with annotator("cy") as cy:
        while await answer(cy, job) is not None:
            pass
    async with httpx.AsyncClient(base_url=labeling.url, headers=admin, timeout=30) as client:
        done = await wait_completed(client, job)
    assert done["status"] == "Completed", done
    assert done["annotations"] == 3 * ITEMS
    rows = labelled_rows(store, str(done["output_dataset_uri"]))
    assert [(r["text"], r["label"], r["annotator_count"]) for r in rows] == [
        (f"pet {i}", truth[i], 3) for i in range(ITEMS)
    ]
    stored = list(store.list(f"labeling/jobs/{job}/annotations/"))
    assert len(stored) == 3 * ITEMS
