"""An auto-labelling round on real parts: labeling, ingest and the trainer in-process on Tansu.

People (one annotator, through the HTTP API) label 200 items of a tabular dataset with real
signal; the labeling service asks the trainer for a model with TrainingJobRequested, scores the
rest with the model the trainer wrote, and machine-labels the items above the threshold chosen
for 95% precision on the held-out human labels. The machine labels are checked against the truth.
Behind `long`: a training job and a few hundred HTTP calls take tens of seconds on 2 cores.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pyarrow as pa
import pytest
from cairn.datasets import write_dataset_version
from cairn.settings import CairnSettings
from sklearn.datasets import make_classification

from services.labeling.domain import Queue
from services.trainer.app import create_service as create_trainer
from services.trainer.config import TrainerSettings
from tests.support.http_server import served
from tests.support.labeling_stack import labeling_stack
from tests.support.tansu import unique_name

pytestmark = [pytest.mark.integration, pytest.mark.long]

HANG_GUARD_S = 180.0


async def test_a_round_machine_labels_at_the_target_precision(
    kafka_settings: CairnSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"FIRST_ROUND_LABELS": "200", "EVERY_S": "0.2", "NUM_ROUND": "40"}.items():
        monkeypatch.setenv(f"CAIRN_LABELING_AUTOLABEL_{name}", value)
    features, truth = make_classification(
        n_samples=600,
        n_features=6,
        n_informative=4,
        n_classes=2,
        class_sep=2.5,
        flip_y=0,
        random_state=5,
    )
    ids = [f"r{index}" for index in range(len(truth))]
    true_label = {item: str(label) for item, label in zip(ids, truth, strict=True)}
    columns = {f"f{k}": features[:, k].tolist() for k in range(features.shape[1])}
    async with labeling_stack(kafka_settings, tmp_path) as stack:
        table = pa.table({"id": ids, **columns})
        dataset = unique_name("loans")
        version, _ = write_dataset_version(stack.store, dataset, table)
        trainer = create_trainer(
            stack.settings, stack.store, TrainerSettings(worker_id="al-worker", heartbeat_s=0.2)
        )
        async with served(trainer.asgi, "trainer"):
            crowd, tokens = await stack.workforce(["ann"])
            job = unique_name("al")[:40]
            await stack.create_job(
                job_name=job,
                dataset_uri=f"dataset://{dataset}@{version.version}",
                task_type="tabular-classification",
                labels=["0", "1"],
                workforce_name=crowd,
                workers_per_item=1,
                id_column="id",
                auto_label=True,
            )
            async with stack.client(tokens["ann"]) as ann:
                for _ in range(200):
                    task = (await ann.post(f"/labeling-jobs/{job}/tasks/next")).json()["task"]
                    answer = await ann.post(
                        f"/labeling-jobs/{job}/tasks/{task['item_id']}/answer",
                        json={"label": true_label[task["item_id"]]},
                    )
                    assert answer.status_code == 201, answer.text
            state = await wait_round(stack, job)
        round_one = state["rounds"][0]
        assert round_one["status"] == "Completed", round_one
        assert round_one["held_out"] >= 50 and round_one["threshold"] is not None, round_one
        raw = stack.store.get_bytes(f"labeling/jobs/{job}/queue.json")
        queue = Queue.model_validate_json(raw)
        machine = {i: s.machine_label for i, s in queue.items.items() if s.machine_label}
        assert len(machine) == round_one["machine_labeled"] >= 200  # most of the 400 left
        right = sum(1 for item, label in machine.items() if label == true_label[item])
        assert right / len(machine) >= 0.95
        trained = stack.store.list(f"outputs/labeling/autolabel/{job}/round-1/model/")
        assert trained, "the trainer wrote the round's model where the request said"


async def wait_round(stack, job: str) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + HANG_GUARD_S
    async with stack.client() as admin:
        while True:
            found = await admin.get(f"/labeling-jobs/{job}/auto-label")
            assert found.status_code == 200, found.text
            rounds = found.json()["rounds"]
            if rounds and rounds[0]["status"] != "Training":
                return dict(found.json())
            assert time.monotonic() < deadline, f"no round finished: {found.text}"
            await asyncio.sleep(0.2)
