"""Two registry replicas on the real broker and S3 server: numbering and one version per job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from cairn.bus import EventProducer
from cairn.contracts.events import RegistrationSpec, TrainingJobCompleted
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.registry.app import create_service
from services.registry.config import RegistrySettings
from tests.support.auth import admin_headers
from tests.support.http_server import served
from tests.support.tansu import unique_name
from tests.unit.test_registry_handlers import write_manifest

pytestmark = pytest.mark.integration


@asynccontextmanager
async def serving(service: Service) -> AsyncIterator[str]:
    """Run the service's API (and through its lifespan, its consumers) on a free port."""
    async with served(service.api, service.name) as url:
        yield url


@pytest.fixture
def settings(kafka_settings: CairnSettings, s3_settings: CairnSettings) -> CairnSettings:
    return kafka_settings.model_copy(
        update={
            "store_url": s3_settings.store_url,
            "s3_endpoint": s3_settings.s3_endpoint,
            "s3_access_key": s3_settings.s3_access_key,
            "s3_secret_key": s3_settings.s3_secret_key,
        }
    )


async def test_two_replicas_number_versions_without_gaps_or_duplicates(
    settings: CairnSettings, s3_store: ObjectStore
) -> None:
    group_name = unique_name("credit")
    config = RegistrySettings(consumer_group=unique_name("cairn.registry"))
    replicas = [create_service(settings, s3_store, config) for _ in range(2)]
    manual = 12
    jobs = [unique_name("job") for _ in range(5)]
    for index in range(manual):
        write_manifest(s3_store, f"models/{group_name}/hand-{index}/", training_job=None)

    async with serving(replicas[0]) as url_a, serving(replicas[1]) as url_b:
        headers = admin_headers(s3_store, settings)
        clients = [
            httpx.AsyncClient(base_url=url, timeout=30, headers=headers) for url in (url_a, url_b)
        ]
        try:
            # Hand registrations split across both replicas, all at once.
            answers = await asyncio.gather(
                *(
                    clients[index % 2].post(
                        f"/model-package-groups/{group_name}/versions",
                        json={"artifact_uri": f"models/{group_name}/hand-{index}/"},
                    )
                    for index in range(manual)
                )
            )
            assert [answer.status_code for answer in answers] == [201] * manual
            assert sorted(answer.json()["version"] for answer in answers) == list(
                range(1, manual + 1)
            )

            # Each completed job is published twice (a producer retry); both replicas consume.
            async with EventProducer(settings, source="trainer") as producer:
                for job in jobs * 2:
                    await producer.publish(
                        TrainingJobCompleted(
                            job_name=job,
                            algorithm="xgboost",
                            artifact_uri=f"models/{job}/",
                            device="cpu",
                            training_time_s=1,
                            total_time_s=1,
                            registration=RegistrationSpec(model_package_group=group_name),
                        )
                    )

            async def versions() -> list[dict[str, object]]:
                listed = await clients[0].get(f"/model-package-groups/{group_name}/versions")
                return list(listed.json())

            deadline = time.monotonic() + 30
            while len(await versions()) < manual + len(jobs):
                assert time.monotonic() < deadline, "job registrations did not arrive"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # time for a duplicate to show up, were there one
            found = await versions()
        finally:
            for client in clients:
                await client.aclose()

    assert [v["version"] for v in found] == list(range(1, manual + len(jobs) + 1))
    by_job = [v["lineage"]["training_job"] for v in found[manual:]]  # type: ignore[index]
    assert sorted(by_job) == sorted(jobs)
