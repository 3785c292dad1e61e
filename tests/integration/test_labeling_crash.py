"""A labeling service that dies between storing an answer and recording it in its queue: the
answer is recorded from the store on the next start, is not offered again and cannot be given twice
(the SIGKILL variant with a real process is tests/reliability/test_labeling_restart.py, long)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cairn.settings import CairnSettings

from services.labeling.domain import Annotation, annotation_key
from tests.support.labeling_stack import LabelingStack, labeling_stack
from tests.support.tansu import unique_name

pytestmark = pytest.mark.integration


async def test_an_answer_stored_before_a_crash_is_recorded_and_not_taken_twice(
    kafka_settings: CairnSettings, tmp_path: Path
) -> None:
    async with labeling_stack(kafka_settings, tmp_path) as stack:
        job, tokens = await start_small_job(stack)
        async with stack.client(tokens["ann"]) as ann:
            task = (await ann.post(f"/labeling-jobs/{job}/tasks/next")).json()["task"]
        # What a process killed between the two writes leaves: the answer, not the queue's record.
        crashed = Annotation(job_name=job, item_id=task["item_id"], annotator="ann", label="pos")
        stack.store.put_bytes(
            f"labeling/jobs/{annotation_key(job, task['item_id'], 'ann')}",
            crashed.model_dump_json().encode(),
        )
    async with labeling_stack(kafka_settings, tmp_path) as restarted:
        async with restarted.client(tokens["ann"]) as ann:
            again = await ann.post(
                f"/labeling-jobs/{job}/tasks/{task['item_id']}/answer", json={"label": "neg"}
            )
            assert again.status_code == 409 and again.json()["code"] == "already_answered"
            offered = []
            while nxt := (await ann.post(f"/labeling-jobs/{job}/tasks/next")).json()["task"]:
                offered.append(nxt["item_id"])
                await ann.post(
                    f"/labeling-jobs/{job}/tasks/{nxt['item_id']}/answer", json={"label": "pos"}
                )
        assert task["item_id"] not in offered
        done = await restarted.wait_job(job, lambda j: j["annotations"] == 2)
        assert done["items_done"] == 2


async def start_small_job(stack: LabelingStack) -> tuple[str, dict[str, str]]:
    workforce, tokens = await stack.workforce(["ann"])
    job = unique_name("crash")
    await stack.create_job(
        job_name=job,
        dataset_uri=stack.reviews_dataset([("good", "pos"), ("bad", "neg")]),
        task_type="text-classification",
        labels=["pos", "neg"],
        workforce_name=workforce,
        workers_per_item=1,
    )
    return job, tokens
