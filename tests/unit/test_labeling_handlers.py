"""The labeling handlers on the bus path, with a recording platform and an in-memory store: a
request that cannot start fails with its reason, a redelivered one starts nothing twice, and
machine labels from auto-labelling take items off the people's queue."""

from __future__ import annotations

import pyarrow as pa
from cairn.auth.principal import Principal
from cairn.auth.sealing import SecretBox
from cairn.contracts.labeling_events import (
    LabelingJobFailed,
    LabelingJobRequested,
    LabelingJobStarted,
)
from cairn.datasets import write_dataset_version
from cairn.store import open_store
from cryptography.fernet import Fernet

from services.labeling.config import LabelingSettings
from services.labeling.domain import Member, Workforce
from services.labeling.handlers import LabelingHandlers
from services.labeling.tasks import Tasks
from tests.support.tansu import unique_name
from tests.unit.test_batch_requests import RecordingPlatform, envelope

LABELER = Principal(name="ann", key_id="K1", scopes=frozenset({"label"}))


def handlers() -> tuple[LabelingHandlers, RecordingPlatform, str]:
    store = open_store(f"memory://{unique_name('labeling')}")
    platform = RecordingPlatform(Principal(name="lead", key_id="K0", scopes=frozenset({"label"})))
    made = LabelingHandlers(store, SecretBox(Fernet.generate_key()), LabelingSettings(), platform)
    made.workforces.create(
        "crowd.json",
        Workforce(workforce_name="crowd", members=[Member(name="ann", key_id="K1")]),
    )
    version, _ = write_dataset_version(store, "texts", pa.table({"text": ["a", "b", "c"]}))
    return made, platform, f"dataset://texts@{version.version}"


def request(dataset: str, **changes: object) -> LabelingJobRequested:
    base: dict[str, object] = {
        "job_name": "j",
        "dataset_uri": dataset,
        "task_type": "text-classification",
        "labels": ["x", "y"],
        "workforce_name": "crowd",
        "workers_per_item": 1,
    }
    return LabelingJobRequested.model_validate({**base, **changes})


async def test_a_request_that_cannot_start_fails_with_its_reason() -> None:
    made, platform, _ = handlers()
    await made.on_requested(envelope(request("dataset://missing@1")))
    (failed,) = platform.events
    assert isinstance(failed, LabelingJobFailed) and "missing" in failed.reason
    assert (await made.describe("j")).status == "Failed"


async def test_a_redelivered_request_starts_the_job_once() -> None:
    made, platform, dataset = handlers()
    for _ in range(2):
        await made.on_requested(envelope(request(dataset)))
    started = [e for e in platform.events if isinstance(e, LabelingJobStarted)]
    assert len(started) == 1 and started[0].item_count == 3
    job = await made.describe("j")
    assert (job.status, job.created_by, job.item_count) == ("InProgress", "lead", 3)


async def test_machine_labels_and_priorities_reshape_the_peoples_queue() -> None:
    made, _, dataset = handlers()
    await made.on_requested(envelope(request(dataset)))
    tasks = Tasks(made)
    await tasks.set_priorities("j", {"0": 0.9, "1": 0.99, "2": 0.51})
    await tasks.set_machine_labels("j", {"1": ("x", 0.99)})
    offered = (await tasks.next_task("j", LABELER))["task"]
    assert offered["item_id"] == "2", "the least confident item comes first"
    queue = await made.queue("j")
    assert queue.done("1") and queue.items["1"].machine_label == "x"
