"""The labeling service and the ingest service (which registers the labels) served in-process on
the real broker and a local store, with a dataset, a workforce and helpers to wait on a job."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
from cairn.datasets import write_dataset_version
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from pydantic import SecretStr

from services.ingest.app import create_service as create_ingest
from services.labeling.app import create_service as create_labeling
from services.labeling.config import LabelingSettings
from tests.support.auth import PLATFORM_KEY, admin_headers
from tests.support.http_server import served
from tests.support.tansu import unique_name

HANG_GUARD_S = 60.0
REVIEWS = [
    ("I love it, works great", "pos"),
    ("awful, broke in a day", "neg"),
    ("good value and solid", "pos"),
    ("terrible support, avoid", "neg"),
]


@dataclass
class LabelingStack:
    url: str
    store: ObjectStore
    settings: CairnSettings
    admin: dict[str, str]

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = self.admin if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def reviews_dataset(self, rows: list[tuple[str, str]] = REVIEWS) -> str:
        name = unique_name("reviews")
        table = pa.table({"text": [r[0] for r in rows], "truth": [r[1] for r in rows]})
        version, _ = write_dataset_version(self.store, name, table)
        return f"dataset://{name}@{version.version}"

    async def workforce(self, members: list[str]) -> tuple[str, dict[str, str]]:
        name = unique_name("crowd")[:30].lower()
        async with self.client() as client:
            answer = await client.post(
                "/workforces", json={"workforce_name": name, "members": members}
            )
        assert answer.status_code == 201, answer.text
        return name, answer.json()["tokens"]

    async def create_job(self, **request: Any) -> str:
        async with self.client() as client:
            answer = await client.post("/labeling-jobs", json=request)
            assert answer.status_code == 202, answer.text
        await self.wait_job(request["job_name"], lambda job: job["status"] == "InProgress")
        return str(request["job_name"])

    async def wait_job(self, name: str, done: Any) -> dict[str, Any]:
        deadline = time.monotonic() + HANG_GUARD_S
        async with self.client() as client:
            while True:
                answer = await client.get(f"/labeling-jobs/{name}")
                if answer.status_code == 200 and done(answer.json()):
                    return dict(answer.json())
                assert time.monotonic() < deadline, f"job {name} never got there: {answer.text}"
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def labeling_stack(kafka_settings: CairnSettings, root: Path) -> AsyncIterator[LabelingStack]:
    settings = kafka_settings.model_copy(
        update={"platform_key": SecretStr(PLATFORM_KEY), "store_url": f"file://{root / 'store'}"}
    )
    store = open_store(settings=settings)
    labeling = create_labeling(settings, store, LabelingSettings(sweep_interval_s=0.1))
    ingest = create_ingest(settings, store)
    async with served(ingest.asgi, "ingest"), served(labeling.asgi, "labeling") as url:
        yield LabelingStack(url, store, settings, admin_headers(store, settings))
