"""Schedules and the service layer without a broker: a cron trigger starts one execution per due
time, and a step's completion event moves the execution on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cairn.audit import AuditRecord, Outcome
from cairn.auth.principal import AUTH_DISABLED, Principal
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import TrainingJobCompleted, TrainingJobRequested
from cairn.settings import CairnSettings
from cairn.store.memory import InMemoryObjectStore
from pydantic import BaseModel

from services.pipelines.config import PipelinesSettings
from services.pipelines.handlers import PipelineHandlers
from services.pipelines.trigger_runner import TriggerRunner
from services.pipelines.triggers import TriggerRequest

T0 = datetime(2026, 11, 30, 12, 1, tzinfo=UTC)
ONE_STEP = {
    "parameters": {"when": {"type": "string", "default": "now"}},
    "steps": [
        {
            "name": "train",
            "type": "Training",
            "arguments": {"algorithm": "xgboost", "tags": {"when": {"get": "parameters.when"}}},
        }
    ],
}


def envelope(data: BaseModel) -> Envelope[Any]:
    return Envelope[type(data)](  # type: ignore[misc]
        type=type(data).__name__, source="test", correlation_id="c", data=data
    )


class RecordingPlatform:
    """The kernel's Platform for the handlers: what they publish is kept."""

    def __init__(self) -> None:
        self.events: list[BaseModel] = []

    async def publish(
        self, data: BaseModel, cause: Envelope[Any] | None = None, correlation_id: str | None = None
    ) -> Envelope[Any]:
        self.events.append(data)
        return envelope(data)

    async def dead_letter(
        self, envelope: Envelope[Any], reason: str, *, error: str = "", group: str = ""
    ) -> None:
        raise AssertionError(f"nothing is dead-lettered here: {reason}")

    async def principal_of(self, envelope: Envelope[Any]) -> Principal:
        return AUTH_DISABLED

    async def audit(
        self,
        *,
        action: str,
        resource: str,
        principal: Principal | str,
        outcome: Outcome = "success",
        correlation_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        return AuditRecord(principal="x", action=action, resource=resource, outcome=outcome)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def service(clock: Clock) -> tuple[PipelineHandlers, TriggerRunner, RecordingPlatform]:
    platform = RecordingPlatform()
    config = PipelinesSettings()
    handlers = PipelineHandlers(InMemoryObjectStore(), config, platform, clock=clock)
    runner = TriggerRunner(handlers, CairnSettings(), config, platform, clock=clock)
    return handlers, runner, platform


def requests(platform: RecordingPlatform) -> list[Any]:
    return [event for event in platform.events if isinstance(event, TrainingJobRequested)]


async def test_a_schedule_starts_one_execution_per_due_time() -> None:
    clock = Clock()
    handlers, runner, platform = service(clock)
    await handlers.save("nightly", ONE_STEP, AUTH_DISABLED, new=True)
    await runner.add("nightly", TriggerRequest(schedule="*/10 * * * *"), AUTH_DISABLED)
    await runner.fire_schedules()
    assert await handlers.list_executions("nightly") == []  # 12:01: nothing due yet
    clock.now = T0 + timedelta(minutes=10)
    await runner.fire_schedules()
    await runner.fire_schedules()  # the same due time again starts nothing
    runs = await handlers.list_executions("nightly")
    assert len(runs) == 1 and runs[0].trigger_name is not None
    assert len(requests(platform)) == 1


async def test_a_completion_event_ends_the_step_and_the_execution() -> None:
    clock = Clock()
    handlers, _, platform = service(clock)
    await handlers.save("once", ONE_STEP, AUTH_DISABLED, new=True)
    execution, created = await handlers.start("once", {"when": "today"}, AUTH_DISABLED)
    assert created and execution.steps["train"].status == "Executing"
    [request] = requests(platform)
    assert request.tags == {"when": "today"}
    completed = TrainingJobCompleted(
        job_name=request.job_name,
        algorithm="xgboost",
        artifact_uri="models/x/",
        device="cpu",
        training_time_s=1,
        total_time_s=1,
    )
    done: Envelope[Any] = envelope(completed)
    await handlers.on_completion(done)
    await handlers.on_completion(done)  # a redelivery changes nothing
    finished = await handlers.execution(execution.execution_id)
    assert finished.status == "Succeeded"
    assert finished.steps["train"].properties["model_artifact"] == "models/x/"
    types = [type(event).__name__ for event in platform.events]
    assert types.count("PipelineExecutionSucceeded") == 1
    assert types.count("PipelineStepSucceeded") == 1
