"""A trainer killed between writing a Pending job and publishing its request loses nothing: the
same request again, or the requeue pass once the job has waited too long, publishes it, and the
job trains once. The kill is a publish that fails after the write."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import TrainingJobCompleted, TrainingJobRequested, TrainingJobStarted
from cairn.errors import Conflict, Unavailable
from cairn.store import InMemoryObjectStore
from pydantic import BaseModel

from services.trainer.domain import TrainingJob, job_key
from tests.support.trainer_data import credit_frame, to_csv_bytes
from tests.unit.test_trainer_handlers import Harness, envelope, request


class Crashing(Harness):
    """A harness whose next publish fails, as a trainer killed right before it would."""

    def __init__(self, store: InMemoryObjectStore, **settings_fields: Any) -> None:
        super().__init__(store, **settings_fields)
        self.fail_next_publish = False

    async def publish(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]:
        if self.fail_next_publish:
            self.fail_next_publish = False
            raise Unavailable("killed before the publish")
        return await super().publish(data, cause, correlation_id)

    def requests(self) -> list[TrainingJobRequested]:
        return self.of(TrainingJobRequested)


@pytest.fixture
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore()
    store.put_bytes("data/credit/train/part-0.csv", to_csv_bytes(credit_frame(300, seed=5)))
    return store


def small_request() -> TrainingJobRequested:
    return request(
        hyperparameters={"num_round": 5, "max_depth": 2},
        input_channels=[{"name": "train", "uri": "data/credit/train/", "label_column": "default"}],
    )


async def created_but_never_published(harness: Crashing) -> None:
    harness.fail_next_publish = True
    with pytest.raises(Unavailable):
        await harness.handlers.create(small_request())
    job = harness.handlers.jobs.get(job_key("job-1")).doc
    assert job.status == "Pending" and not harness.requests()


async def test_the_same_request_again_publishes_a_job_left_pending_and_it_trains_once(
    store: InMemoryObjectStore,
) -> None:
    harness = Crashing(store)
    await created_but_never_published(harness)

    retried = await harness.handlers.create(small_request())

    assert retried.job.status == "Pending"
    [published] = harness.requests()
    await harness.handlers.on_requested(envelope(published))
    assert len(harness.of(TrainingJobStarted)) == len(harness.of(TrainingJobCompleted)) == 1
    with pytest.raises(Conflict, match="Completed"):  # started once: no longer a retry
        await harness.handlers.create(small_request())
    assert len(harness.requests()) == 1


async def test_another_request_under_a_pending_jobs_name_is_still_a_conflict(
    store: InMemoryObjectStore,
) -> None:
    harness = Crashing(store)
    await created_but_never_published(harness)
    other = small_request().model_copy(update={"hyperparameters": {"num_round": 7}})
    with pytest.raises(Conflict):
        await harness.handlers.create(other)
    assert not harness.requests()


async def test_a_job_pending_past_the_grace_period_is_requeued_once_and_trains_once(
    store: InMemoryObjectStore,
) -> None:
    harness = Crashing(store, requeue_after_s=60)
    await created_but_never_published(harness)
    await harness.handlers.requeue_unclaimed()
    assert not harness.requests()  # still within its grace period

    def waited(current: TrainingJob | None) -> TrainingJob:
        assert current is not None
        return current.model_copy(update={"created_at": utc_now() - timedelta(minutes=2)})

    harness.handlers.jobs.update(job_key("job-1"), waited)
    await harness.handlers.requeue_unclaimed()
    await harness.handlers.requeue_unclaimed()  # the stamp starts a new grace period

    [requeued] = harness.requests()
    await harness.handlers.on_requested(envelope(requeued))
    await harness.handlers.on_requested(envelope(requeued))  # a second copy is a no-op
    assert len(harness.of(TrainingJobStarted)) == len(harness.of(TrainingJobCompleted)) == 1
    await harness.handlers.requeue_unclaimed()
    assert len(harness.requests()) == 1
