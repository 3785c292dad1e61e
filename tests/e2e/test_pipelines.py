"""A user pipeline on `cairn up`, started by an event: a plain Kafka client publishes
`DatasetIngested`, the trigger starts process -> train -> evaluate -> condition -> register, each
step run by its owning service; the same event again is served from the step cache.

Uses the shared demo platform (its credit-risk datasets are the input).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cairn.bus.publish import envelope_for, outgoing_message
from cairn.contracts.events import DatasetIngested
from cairn.store import open_store
from cairn_cli.demo.pipeline import EVALUATE_SCRIPT, credit_pipeline

from tests.support.auth import home_headers
from tests.support.demo_platform import DemoPlatform
from tests.support.tansu import unique_name

pytestmark = pytest.mark.e2e
HANG_GUARD_S = 240.0


async def publish_ingested(bootstrap: str, dataset_uri: str) -> str:
    """`DatasetIngested` from a plain aiokafka producer, as any client could send it."""
    data = DatasetIngested(
        dataset_name="credit-risk-train",
        version=1,
        uri=dataset_uri,
        location="datasets/credit-risk-train/1/data/",
        sha256="0" * 64,
        row_count=1,
        columns=[],
        created=False,
    )
    message = outgoing_message(envelope_for(data, source="a-kafka-client"), None)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(message.topic, message.value, key=message.key)
    finally:
        await producer.stop()
    return message.value.decode()


def executions(platform: DemoPlatform, name: str) -> list[dict[str, Any]]:
    url = f"{platform.url('pipelines')}/pipelines/{name}/executions"
    listed = httpx.get(url, headers=home_headers(platform.home), timeout=30)
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = listed.json()["executions"]
    return found


def wait_for_runs(platform: DemoPlatform, name: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        runs = executions(platform, name)
        if len(runs) >= count and all(run["status"] != "Executing" for run in runs):
            return runs
        assert time.monotonic() < deadline, f"executions never ended: {runs}"
        time.sleep(0.5)


@pytest.mark.timeout(900)  # the shared platform's start and demo count against the first user
def test_an_event_starts_a_user_pipeline_and_the_same_event_again_hits_the_cache(
    demo_platform: DemoPlatform, tmp_path: Any
) -> None:
    name = unique_name("credit")
    script = f"code/{name}/evaluate.py"
    open_store((demo_platform.home / "store").resolve().as_uri()).put_bytes(script, EVALUATE_SCRIPT)
    definition = tmp_path / "pipeline.yaml"
    definition.write_text(credit_pipeline(name, script, group=name).to_yaml())
    created = demo_platform.cli("pipelines", "create", name, str(definition))
    assert created.returncode == 0, created.stdout + created.stderr
    trigger = demo_platform.cli(
        "pipelines", "trigger", "add", name,
        "--on", "DatasetIngested",
        "--where", 'data.dataset_name == "credit-risk-train"',
        "-p", "dataset={data.uri}",
    )  # fmt: skip
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr

    bootstrap = demo_platform.state["kafka_bootstrap_servers"]
    dataset = demo_platform.summary["datasets"]["train"]
    asyncio.run(publish_ingested(bootstrap, dataset))
    [first] = wait_for_runs(demo_platform, name, 1)
    assert first["status"] == "Succeeded", json.dumps(first, indent=1)
    steps = {step["name"]: step for step in first["steps"]}
    assert steps["evaluate"]["properties"]["metrics"]["auc"] > 0.6
    assert steps["register"]["properties"]["version"] == 1
    assert steps["too-weak"]["status"] == "Skipped"
    assert not any(step["cache_hit"] for step in first["steps"])

    asyncio.run(publish_ingested(bootstrap, dataset))
    second = next(
        r
        for r in wait_for_runs(demo_platform, name, 2)
        if r["execution_id"] != first["execution_id"]
    )
    assert second["status"] == "Succeeded", json.dumps(second, indent=1)
    again = {step["name"]: step for step in second["steps"]}
    for step in ("process", "train", "evaluate"):
        assert again[step]["cache_hit"], step
        assert again[step]["source_execution_id"] == first["execution_id"]
    # Registering the same training job again is the same version, not a new one.
    assert again["register"]["properties"]["version"] == 1

    shown = demo_platform.cli("pipelines", "executions", "describe", second["execution_id"])
    assert shown.returncode == 0 and "hit" in shown.stdout
