"""The pipelines service killed with SIGKILL mid-run: after a restart the execution finishes and no
step runs twice. The kill comes when the first training request is on the bus (the sentinel), while
the stand-in trainer holds its answer; every request the stand-in sees afterwards for that step
carries the same deterministic job name, so the owning service runs it once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cairn.settings import CairnSettings
from cairn.store import open_store
from pydantic import SecretStr

from tests.integration.test_pipelines_service import standing_in, steps
from tests.support.auth import PLATFORM_KEY, scoped_headers
from tests.support.service_process import ServiceProcess
from tests.support.tansu import unique_name
from tests.unit.test_pipelines_definition import credit_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.long]
HANG_GUARD_S = 90.0


@pytest.fixture
def settings(kafka_settings: CairnSettings, tmp_path: Path) -> CairnSettings:
    return kafka_settings.model_copy(
        update={"platform_key": SecretStr(PLATFORM_KEY), "store_url": f"file://{tmp_path}/store"}
    )


@pytest.fixture
def pipelines(settings: CairnSettings, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        "pipelines",
        settings,
        tmp_path / "pipelines.log",
        env={"CAIRN_PIPELINES_SWEEP_INTERVAL_S": "0.2"},
        hang_guard_s=HANG_GUARD_S,
    )
    try:
        yield process
    finally:
        process.stop()


async def test_a_killed_pipelines_service_resumes_and_runs_no_step_twice(
    settings: CairnSettings, pipelines: ServiceProcess
) -> None:
    name = unique_name("kill")
    headers = scoped_headers(open_store(settings=settings), settings, ["train", "read"])
    pipelines.start()
    async with (
        httpx.AsyncClient(base_url=pipelines.url, headers=headers, timeout=10) as http,
        standing_in(settings, name, fail_first_training=False) as stand_in,
    ):
        document = credit_pipeline().to_dict() | {"name": name}
        created = await http.post("/pipelines", json={"name": name, "definition": document})
        assert created.status_code == 201, created.text
        stand_in.paused.clear()  # answers wait until the service has been killed and restarted
        started = (await http.post(f"/pipelines/{name}/executions", json={})).json()
        deadline = time.monotonic() + HANG_GUARD_S
        while not any("-process-" in job for job in stand_in.seen):
            assert time.monotonic() < deadline, "the processing request never came"
            await asyncio.sleep(0.05)

        await asyncio.to_thread(pipelines.kill)
        await asyncio.to_thread(pipelines.start)
        stand_in.paused.set()

        while True:
            body = (await http.get(f"/pipeline-executions/{started['execution_id']}")).json()
            if body["status"] != "Executing":
                break
            assert time.monotonic() < deadline, f"the execution never ended: {body}"
            await asyncio.sleep(0.1)
        assert body["status"] == "Succeeded", body
        ran = steps(body)
        # One job per step, each under the name the state recorded; a request published again
        # after the restart carried the same name.
        for step, marker in (("process", "-process-"), ("train", "-train-")):
            jobs = [job for job in stand_in.seen if marker in job]
            assert jobs == [ran[step]["request_id"]], (step, stand_in.seen)
            assert ran[step]["attempt"] == 1
        assert list(stand_in.registered) == [ran["train"]["properties"]["job_name"]]
