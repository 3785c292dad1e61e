"""Auto-labelling rounds for jobs created with `auto_label`: train through the trainer, then label.

Every `every_s`, each auto-label job in progress is looked at: once people have labelled enough
items, the round's training set is written under `outputs/labeling/autolabel/<job>/` and a
`TrainingJobRequested` goes to the trainer like any user's (the labeling service is one of its
listed senders). `TrainingJobCompleted` brings the model back: it scores the held-out human labels
and the items no one has labelled, the threshold is chosen for the target precision, the items
above it are machine-labelled through the job's queue (`Tasks.set_machine_labels`) and the rest
are offered to people least confident first (`Tasks.set_priorities`).

State is `labeling/jobs/<job>/autolabel.json` (rounds, written before each request) and
`labeling/autolabel/trainings/<training job>.json` (which job and round a training job serves),
so a restarted service finishes a round it had started.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Annotated, Any

from cairn.artifacts import load_model
from cairn.auth import requires
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    InputChannel,
    TrainingJobCompleted,
    TrainingJobFailed,
    TrainingJobRequested,
)
from cairn.documents import DocumentStore
from cairn.ports import Publish
from cairn.service import Service
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.labeling.autolabel import (
    AUTOLABEL_TASKS,
    AutoLabelRound,
    AutoLabelState,
    choose_threshold,
    due,
    feature_names,
    feature_row,
    held_out,
    predictions,
    training_csv,
)
from services.labeling.domain import JOBS, Item, LabelingJob, Queue, job_key
from services.labeling.handlers import LabelingHandlers
from services.labeling.tasks import Tasks

log = logging.getLogger("cairn.labeling.autolabel")
TRAININGS = "labeling/autolabel/trainings"
OUTPUTS = "outputs/labeling/autolabel"


class AutoLabelSettings(BaseSettings):
    """`CAIRN_LABELING_AUTOLABEL_*`: when rounds start and how sure the machine must be."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_LABELING_AUTOLABEL_", extra="ignore")

    target_precision: float = Field(default=0.95, gt=0, le=1)
    first_round_labels: int = Field(default=200, ge=10, description="Human labels to start.")
    round_step: int = Field(default=200, ge=1, description="New human labels between rounds.")
    held_out_share: float = Field(default=0.3, gt=0, lt=1)
    min_support: int = Field(default=20, ge=1, description="Held-out items a threshold needs.")
    num_round: int = Field(default=60, ge=1, le=10_000, description="XGBoost rounds.")
    every_s: float = Field(default=2.0, gt=0)


class TrainingIndex(BaseModel):
    job_name: str
    round: int


def training_job_name(job_name: str, round_number: int) -> str:
    """A trainer job name (its pattern has no `_`) that is the same after a restart."""
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
    stem = "".join(char if char.isalnum() or char == "-" else "-" for char in job_name)[:40]
    return f"{stem.strip('-') or 'job'}-al{round_number}-{digest}"


class AutoLabeler:
    """Runs the rounds of every auto-label job; all its state is in the store."""

    def __init__(
        self,
        handlers: LabelingHandlers,
        tasks: Tasks,
        publish: Publish,
        settings: AutoLabelSettings | None = None,
    ) -> None:
        self.handlers = handlers
        self.tasks = tasks
        self.publish = publish
        self.settings = settings or AutoLabelSettings()
        self.states = DocumentStore(handlers.store, AutoLabelState, JOBS)
        self.trainings = DocumentStore(handlers.store, TrainingIndex, TRAININGS)

    # The loop -------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            try:
                for job in await self.handlers.list_jobs():
                    if job.request.auto_label and job.status == "InProgress":
                        await self.step(job)
            except Exception:  # the next pass tries again: the state is in the store
                log.exception("auto-labelling pass failed")
            await asyncio.sleep(self.settings.every_s)

    async def step(self, job: LabelingJob) -> AutoLabelState | None:
        """Start a round when one is due; send a round's request a crash left unsent."""
        if job.request.task_type not in AUTOLABEL_TASKS:
            return None
        state = await self._state(job.job_name)
        if state.training and not state.training_requested:
            await self._request_training(job, state)
            return state
        queue = await self.handlers.queue(job.job_name)
        human = [item_id for item_id in queue.order if _human_done(queue, item_id)]
        unlabeled = [item_id for item_id in queue.order if not queue.done(item_id)]
        first, step = self.settings.first_round_labels, self.settings.round_step
        if not due(len(human), len(unlabeled), state, first, step):
            return state
        return await self._start_round(job, state, len(human))

    async def _start_round(
        self, job: LabelingJob, state: AutoLabelState, human: int
    ) -> AutoLabelState:
        number = len(state.rounds) + 1
        name = training_job_name(job.job_name, number)
        labels = await self._human_labels(job)
        items = {item.item_id: item for item in (await self.handlers.job_items(job.job_name)).items}
        share = self.settings.held_out_share
        train_ids = [i for i in sorted(labels) if i in items and not held_out(i, share)]
        if len({labels[i] for i in train_ids}) < 2:
            return state  # a model needs two classes: wait for more labels
        names = _names(job, items)
        rows = [
            feature_row(job.request.task_type, items[i].text, items[i].fields, names)
            for i in train_ids
        ]
        body = training_csv(names, rows, [labels[i] for i in train_ids])
        key = f"{OUTPUTS}/{job.job_name}/round-{number}/train.csv"
        await asyncio.to_thread(self.handlers.store.put_bytes, key, body, content_type="text/csv")
        await asyncio.to_thread(
            self.trainings.update,
            f"{name}.json",
            lambda _: TrainingIndex(job_name=job.job_name, round=number),
        )
        started = AutoLabelRound(round=number, training_job=name, human_labels=human)

        def add_round(current: AutoLabelState | None) -> AutoLabelState:
            base = current or state
            if base.training:
                return base
            return base.model_copy(
                update={"rounds": [*base.rounds, started], "training_requested": False}
            )

        saved = await asyncio.to_thread(
            self.states.update, job_key(job.job_name, "autolabel.json"), add_round
        )
        await self._request_training(job, saved.doc)
        return saved.doc

    async def _request_training(self, job: LabelingJob, state: AutoLabelState) -> None:
        current = state.current
        assert current is not None
        key = f"{OUTPUTS}/{job.job_name}/round-{current.round}/train.csv"
        await self.publish(
            TrainingJobRequested(
                job_name=current.training_job,
                algorithm="xgboost",
                hyperparameters={
                    "objective": "multi:softprob",
                    "num_round": self.settings.num_round,
                    "max_depth": 4,
                    "eta": 0.2,
                },
                input_channels=[InputChannel(name="train", uri=key, label_column="label")],
                output_uri=f"{OUTPUTS}/{job.job_name}/round-{current.round}/model/",
                tags={"labeling_job": job.job_name, "autolabel_round": str(current.round)},
            )
        )
        await asyncio.to_thread(
            self.states.update,
            job_key(job.job_name, "autolabel.json"),
            lambda doc: (doc or state).model_copy(update={"training_requested": True}),
        )

    # Training results -----------------------------------------------------------------------

    async def on_training_completed(self, envelope: Envelope[TrainingJobCompleted]) -> None:
        index = await asyncio.to_thread(
            self.trainings.get_or_none, f"{envelope.data.job_name}.json"
        )
        if index is None:
            return  # not an auto-labelling round
        await self.finish_round(index.doc.job_name, index.doc.round, envelope.data.artifact_uri)

    async def on_training_failed(self, envelope: Envelope[TrainingJobFailed]) -> None:
        index = await asyncio.to_thread(
            self.trainings.get_or_none, f"{envelope.data.job_name}.json"
        )
        if index is None:
            return
        await self._close_round(
            index.doc.job_name,
            index.doc.round,
            {"status": "Failed", "reason": envelope.data.reason[:500]},
        )

    async def finish_round(
        self, job_name: str, number: int, artifact_uri: str
    ) -> AutoLabelRound | None:
        """Score, choose the threshold, machine-label what passes it, reorder the rest."""
        state = await self._state(job_name)
        if len(state.rounds) < number or state.rounds[number - 1].status != "Training":
            return None  # a redelivery of a round already finished
        job = await self.handlers.describe(job_name)
        queue = await self.handlers.queue(job_name)
        labels = await self._human_labels(job)
        items = {item.item_id: item for item in (await self.handlers.job_items(job_name)).items}
        model = await asyncio.to_thread(load_model, self.handlers.store, artifact_uri)
        names = model.input_names
        share = self.settings.held_out_share
        check = [i for i in sorted(labels) if i in items and held_out(i, share)]
        todo = [i for i in queue.order if not queue.done(i) and i in items]
        scored = await asyncio.to_thread(_score, model, job, items, check + todo, names)
        predicted, confidence = scored
        correct = [predicted[k] == labels[i] for k, i in enumerate(check)]
        threshold = choose_threshold(
            confidence[: len(check)],
            correct,
            state.target_precision,
            self.settings.min_support,
            pool=confidence[len(check) :],
        )
        machine: dict[str, tuple[str, float]] = {}
        if threshold is not None:
            for k, item_id in enumerate(todo, start=len(check)):
                if confidence[k] >= threshold.value:
                    machine[item_id] = (predicted[k], float(confidence[k]))
        if machine:
            await self.tasks.set_machine_labels(job_name, machine)
        rest = {
            i: float(confidence[k])
            for k, i in enumerate(todo, start=len(check))
            if i not in machine
        }
        if rest:
            await self.tasks.set_priorities(job_name, rest)
        return await self._close_round(
            job_name,
            number,
            {
                "status": "Completed",
                "held_out": len(check),
                "threshold": threshold.value if threshold else None,
                "held_out_precision": threshold.precision if threshold else None,
                "machine_labeled": len(machine),
                "reason": ""
                if threshold
                else "no threshold met the target precision on enough items",
            },
        )

    async def _close_round(
        self, job_name: str, number: int, update: dict[str, Any]
    ) -> AutoLabelRound:
        def close(current: AutoLabelState | None) -> AutoLabelState:
            assert current is not None
            rounds = list(current.rounds)
            rounds[number - 1] = rounds[number - 1].model_copy(update=update)
            return current.model_copy(update={"rounds": rounds})

        saved = await asyncio.to_thread(
            self.states.update, job_key(job_name, "autolabel.json"), close
        )
        return saved.doc.rounds[number - 1]

    # Reads ------------------------------------------------------------------------------------

    async def _state(self, job_name: str) -> AutoLabelState:
        found = await asyncio.to_thread(
            self.states.get_or_none, job_key(job_name, "autolabel.json")
        )
        if found is not None:
            return found.doc
        return AutoLabelState(job_name=job_name, target_precision=self.settings.target_precision)

    async def describe(self, job_name: str) -> AutoLabelState:
        return await self._state(job_name)

    async def _human_labels(self, job: LabelingJob) -> dict[str, str]:
        """Consolidated human labels of the items every asked person has answered."""
        queue = await self.handlers.queue(job.job_name)
        consolidation = await self.handlers.consolidated(job)
        return {
            item_id: found.label
            for item_id, found in consolidation.labels.items()
            if item_id in queue.items and _human_done(queue, item_id)
        }


def _human_done(queue: Queue, item_id: str) -> bool:
    state = queue.items[item_id]
    return state.machine_label is None and len(state.answered) >= queue.workers_per_item


def _names(job: LabelingJob, items: dict[str, Item]) -> list[str]:
    """The model's columns: the item's fields, less the ones that name or describe it."""
    first = next(iter(items.values()), None)
    request = job.request
    not_features = {request.id_column, request.image_column, request.score_column}
    fields = [name for name in (first.fields if first else {}) if name not in not_features]
    return feature_names(request.task_type, fields)


def _score(
    model: Any, job: LabelingJob, items: dict[str, Item], ids: list[str], names: list[str]
) -> Any:
    rows = [feature_row(job.request.task_type, items[i].text, items[i].fields, names) for i in ids]
    if not rows:
        return [], []
    return predictions(model.predict(model.encode_rows(rows)), model.output_names)


def get_autolabeler(request: Request) -> AutoLabeler:
    autolabeler: AutoLabeler = request.app.state.autolabeler
    return autolabeler


router = APIRouter(prefix="/labeling-jobs", tags=["labeling-jobs"])


@router.get("/{job_name}/auto-label", dependencies=[requires("read")])
async def describe_auto_label(
    job_name: str, autolabeler: Annotated[AutoLabeler, Depends(get_autolabeler)]
) -> AutoLabelState:
    """The job's auto-labelling rounds: training job, threshold, held-out precision, counts."""
    await autolabeler.handlers.describe(job_name)  # 404 for an unknown job
    return await autolabeler.describe(job_name)


def install_autolabel(
    service: Service,
    handlers: LabelingHandlers,
    tasks: Tasks,
    settings: AutoLabelSettings | None = None,
) -> AutoLabeler:
    """Auto-labelling on the labeling service: its loop, the trainer's answers, its route."""
    autolabeler = AutoLabeler(handlers, tasks, service.publish, settings)
    service.api.state.autolabeler = autolabeler
    service.on(TrainingJobCompleted)(autolabeler.on_training_completed)
    service.on(TrainingJobFailed)(autolabeler.on_training_failed)
    service.background("auto-label", autolabeler.run_forever)
    service.include_router(router)
    return autolabeler
