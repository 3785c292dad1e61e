"""Pipeline executions as runs: the execution is the parent of its steps' job runs.

The experiment of an execution is its pipeline's name; a step's training, tuning or processing
job joins that experiment unless its request named one.
"""

from __future__ import annotations

from typing import Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.pipeline_events import (
    PipelineExecutionFailed,
    PipelineExecutionStarted,
    PipelineExecutionStopped,
    PipelineExecutionSucceeded,
    PipelineStepStarted,
    PipelineStepSucceeded,
)

from services.experiments.domain import (
    Run,
    RunKind,
    moved,
    run_id,
    with_experiment,
    with_final,
    with_lineage,
)
from services.experiments.handlers import ExperimentsHandlers

STEP_KINDS: dict[str, RunKind] = {
    "Training": "training",
    "Tuning": "tuning",
    "Processing": "processing",
}


class PipelineRuns:
    """Handlers of the pipelines service's execution events."""

    def __init__(self, handlers: ExperimentsHandlers) -> None:
        self.handlers = handlers

    async def on_started(self, envelope: Envelope[PipelineExecutionStarted]) -> None:
        data = envelope.data
        parameters: dict[str, Any] = {
            "pipeline_version": data.pipeline_version,
            **data.parameters,
        }

        def started(run: Run) -> Run:
            run = with_experiment(moved(run, "InProgress"), data.pipeline_name)
            return run.model_copy(update={"parameters": {**parameters, **run.parameters}})

        await self.handlers.change("pipeline", data.execution_id, started)

    async def on_step_started(self, envelope: Envelope[PipelineStepStarted]) -> None:
        data = envelope.data
        kind = STEP_KINDS.get(data.step_type)
        if kind is None:
            return
        child = run_id(kind, data.request_id)
        parent = await self.handlers.change(
            "pipeline", data.execution_id, lambda run: with_lineage(run, children=[child])
        )

        def adopted(run: Run) -> Run:
            run = with_experiment(run, None, inherited=parent.experiment)
            return with_lineage(run, parent=parent.run_id)

        await self.handlers.change(kind, data.request_id, adopted)

    async def on_step_succeeded(self, envelope: Envelope[PipelineStepSucceeded]) -> None:
        """A step's numeric `metrics` property becomes `<step>.<metric>` on the execution."""
        data = envelope.data
        metrics = data.properties.get("metrics")
        found = {
            f"{data.step_name}.{name}": float(value)
            for name, value in (metrics.items() if isinstance(metrics, dict) else [])
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        await self.handlers.change(
            "pipeline", data.execution_id, lambda run: with_final(run, found)
        )

    async def on_succeeded(self, envelope: Envelope[PipelineExecutionSucceeded]) -> None:
        name = envelope.data.execution_id
        await self.handlers.change("pipeline", name, lambda run: moved(run, "Completed"))

    async def on_failed(self, envelope: Envelope[PipelineExecutionFailed]) -> None:
        data = envelope.data
        await self.handlers.change(
            "pipeline", data.execution_id, lambda run: moved(run, "Failed", reason=data.reason)
        )

    async def on_stopped(self, envelope: Envelope[PipelineExecutionStopped]) -> None:
        name = envelope.data.execution_id
        await self.handlers.change("pipeline", name, lambda run: moved(run, "Stopped"))
