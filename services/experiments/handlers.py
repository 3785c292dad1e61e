"""The experiments service layer: fold the platform's job events into runs; answer queries.

Each handler is one conditional read-modify-write of one run document (`DocumentStore.update`),
with a pure function from `services.experiments.domain`, so a redelivered event changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    TrainingJobCompleted,
    TrainingJobFailed,
    TrainingJobProgressed,
    TrainingJobRequested,
    TrainingJobStarted,
)
from cairn.contracts.processing_events import (
    ProcessingJobCompleted,
    ProcessingJobFailed,
    ProcessingJobRequested,
    ProcessingJobStarted,
)
from cairn.contracts.tuner_events import (
    HyperParameterTuningJobCompleted,
    HyperParameterTuningJobFailed,
    HyperParameterTuningJobRequested,
    HyperParameterTuningJobStarted,
    HyperParameterTuningJobStopped,
    TrainingJobStopped,
    TuningTrialCompleted,
)
from cairn.documents import DocumentStore
from cairn.errors import CairnError, InvalidInput, NotFound
from cairn.store.base import ObjectStore

from services.experiments.domain import (
    KINDS,
    RUNS_PREFIX,
    Run,
    RunKind,
    blank,
    experiments,
    moved,
    run_id,
    run_key,
    with_experiment,
    with_final,
    with_lineage,
    with_points,
)
from services.experiments.query import parse_where, sort_runs

log = logging.getLogger(__name__)

Change = Callable[[Run], Run]
MAX_COMPARED = 20


class ExperimentsHandlers:
    """Runs kept from the bus; read by the routes."""

    def __init__(self, store: ObjectStore) -> None:
        self.runs: DocumentStore[Run] = DocumentStore(store, Run, RUNS_PREFIX)

    async def change(self, kind: RunKind, name: str, change: Change) -> Run:
        """Apply `change` to the run (created blank when this is its first event)."""

        def apply(current: Run | None) -> Run:
            return change(current or blank(kind, name))

        written = await asyncio.to_thread(self.runs.update, run_key(run_id(kind, name)), apply)
        return written.doc

    async def _experiment_of(self, kind: RunKind, name: str) -> str | None:
        found = await asyncio.to_thread(self.runs.get_or_none, run_key(run_id(kind, name)))
        return found.doc.experiment if found is not None else None

    # Training ------------------------------------------------------------------------------

    async def on_training_requested(self, envelope: Envelope[TrainingJobRequested]) -> None:
        request = envelope.data
        parent, inherited = None, None
        if envelope.source == "tuner" and "-" in request.job_name:
            tuning = request.job_name.rsplit("-", 1)[0]
            inherited = await self._experiment_of("tuning", tuning)
            parent = run_id("tuning", tuning) if inherited is not None else None
        parameters: dict[str, Any] = {"algorithm": request.algorithm, **request.hyperparameters}
        if request.entry_point:
            parameters["entry_point"] = request.entry_point

        def requested(run: Run) -> Run:
            run = with_experiment(run, request.experiment, inherited=inherited)
            run = run.model_copy(update={"parameters": {**parameters, **run.parameters}})
            inputs = [channel.uri for channel in request.input_channels]
            return with_lineage(run, inputs=inputs, parent=parent)

        await self.change("training", request.job_name, requested)

    async def on_training_started(self, envelope: Envelope[TrainingJobStarted]) -> None:
        await self.change("training", envelope.data.job_name, lambda r: moved(r, "InProgress"))

    async def on_training_progressed(self, envelope: Envelope[TrainingJobProgressed]) -> None:
        data = envelope.data

        def progressed(run: Run) -> Run:
            return with_points(moved(run, "InProgress"), data.iteration, data.metrics)

        await self.change("training", data.job_name, progressed)

    async def on_training_completed(self, envelope: Envelope[TrainingJobCompleted]) -> None:
        data = envelope.data

        def completed(run: Run) -> Run:
            run = with_final(moved(run, "Completed"), data.metrics)
            run = run.model_copy(
                update={
                    "artifacts": {**run.artifacts, "model": data.artifact_uri},
                    "parameters": {"algorithm": data.algorithm, **run.parameters},
                }
            )
            return with_lineage(run, outputs=[data.artifact_uri])

        await self.change("training", data.job_name, completed)

    async def on_training_failed(self, envelope: Envelope[TrainingJobFailed]) -> None:
        data = envelope.data
        await self.change(
            "training", data.job_name, lambda r: moved(r, "Failed", reason=data.reason)
        )

    async def on_training_stopped(self, envelope: Envelope[TrainingJobStopped]) -> None:
        data = envelope.data

        def stopped(run: Run) -> Run:
            return with_final(moved(run, "Stopped", reason=data.reason or None), data.metrics)

        await self.change("training", data.job_name, stopped)

    # Tuning --------------------------------------------------------------------------------

    async def on_tuning_requested(
        self, envelope: Envelope[HyperParameterTuningJobRequested]
    ) -> None:
        request = envelope.data
        definition = request.training_job_definition
        parameters: dict[str, Any] = {
            "strategy": request.strategy,
            "objective": f"{request.objective.type} {request.objective.metric_name}",
            "algorithm": definition.algorithm,
            **definition.static_hyperparameters,
        }
        ranges = request.parameter_ranges.model_dump(mode="json")
        for kind, items in ranges.items():
            for item in items or []:
                parameters[f"range.{item['name']}"] = {k: v for k, v in item.items() if k != "name"}
                parameters[f"range.{item['name']}"]["kind"] = kind

        def requested(run: Run) -> Run:
            run = with_experiment(run, request.experiment)
            run = run.model_copy(update={"parameters": {**parameters, **run.parameters}})
            return with_lineage(run, inputs=[c.uri for c in definition.input_channels])

        await self.change("tuning", request.tuning_job_name, requested)

    async def on_tuning_started(self, envelope: Envelope[HyperParameterTuningJobStarted]) -> None:
        name = envelope.data.tuning_job_name
        await self.change("tuning", name, lambda r: moved(r, "InProgress"))

    async def on_trial_completed(self, envelope: Envelope[TuningTrialCompleted]) -> None:
        """A trial is a child run of its tuning job; the objective is the tuning run's curve."""
        data = envelope.data
        tuning = await self.change(
            "tuning",
            data.tuning_job_name,
            lambda run: with_lineage(
                with_points(
                    moved(run, "InProgress"),
                    data.trial_number,
                    {"objective": data.objective_value} if data.objective_value is not None else {},
                ),
                children=[run_id("training", data.training_job_name)],
            ),
        )

        def child(run: Run) -> Run:
            run = with_experiment(run, None, inherited=tuning.experiment)
            return with_lineage(run, parent=tuning.run_id)

        await self.change("training", data.training_job_name, child)

    async def _tuning_ended(self, name: str, status: Any, reason: str | None, best: Any) -> None:
        def ended(run: Run) -> Run:
            run = moved(run, status, reason=reason)
            if best is None:
                return run
            run = with_final(run, {"best_objective": best.objective_value})
            artifacts = dict(run.artifacts)
            if best.artifact_uri:
                artifacts["best_model"] = best.artifact_uri
            best_params = {f"best.{k}": v for k, v in best.parameters.items()}
            return run.model_copy(
                update={"artifacts": artifacts, "parameters": {**run.parameters, **best_params}}
            )

        await self.change("tuning", name, ended)

    async def on_tuning_completed(
        self, envelope: Envelope[HyperParameterTuningJobCompleted]
    ) -> None:
        data = envelope.data
        await self._tuning_ended(data.tuning_job_name, "Completed", None, data.best_training_job)

    async def on_tuning_failed(self, envelope: Envelope[HyperParameterTuningJobFailed]) -> None:
        data = envelope.data
        await self._tuning_ended(
            data.tuning_job_name, "Failed", data.reason, data.best_training_job
        )

    async def on_tuning_stopped(self, envelope: Envelope[HyperParameterTuningJobStopped]) -> None:
        data = envelope.data
        await self._tuning_ended(
            data.tuning_job_name, "Stopped", data.reason or None, data.best_training_job
        )

    # Processing ----------------------------------------------------------------------------

    async def on_processing_requested(self, envelope: Envelope[ProcessingJobRequested]) -> None:
        request = envelope.data
        parameters: dict[str, Any] = {
            "program": request.builtin or request.entry_point,
            "arguments": " ".join(request.arguments),
            **{f"env.{k}": v for k, v in request.environment.items()},
        }

        def requested(run: Run) -> Run:
            run = with_experiment(run, request.experiment)
            run = run.model_copy(update={"parameters": {**parameters, **run.parameters}})
            return with_lineage(run, inputs=[item.source for item in request.inputs])

        await self.change("processing", request.job_name, requested)

    async def on_processing_started(self, envelope: Envelope[ProcessingJobStarted]) -> None:
        await self.change("processing", envelope.data.job_name, lambda r: moved(r, "InProgress"))

    async def on_processing_completed(self, envelope: Envelope[ProcessingJobCompleted]) -> None:
        data = envelope.data

        def completed(run: Run) -> Run:
            run = with_final(moved(run, "Completed"), data.metrics)
            artifacts = {**run.artifacts, **{o.output_name: o.uri for o in data.outputs}}
            datasets = [f"dataset://{o.dataset_name}" for o in data.outputs if o.dataset_name]
            run = run.model_copy(update={"artifacts": artifacts})
            return with_lineage(run, outputs=[o.uri for o in data.outputs] + datasets)

        await self.change("processing", data.job_name, completed)

    async def on_processing_failed(self, envelope: Envelope[ProcessingJobFailed]) -> None:
        data = envelope.data
        await self.change(
            "processing", data.job_name, lambda r: moved(r, "Failed", reason=data.reason)
        )

    # Queries -------------------------------------------------------------------------------

    async def get(self, run: str) -> Run:
        """A run by id (`training.credit-7`) or by bare job name when only one kind has it."""
        if "." in run and run.split(".", 1)[0] in KINDS:
            found = await asyncio.to_thread(self.runs.get_or_none, run_key(run))
            if found is None:
                raise NotFound(f"no run {run!r}")
            return found.doc
        matches = []
        for kind in KINDS:
            found = await asyncio.to_thread(self.runs.get_or_none, run_key(run_id(kind, run)))
            if found is not None:
                matches.append(found.doc)
        if not matches:
            raise NotFound(f"no run {run!r}")
        if len(matches) > 1:
            ids = ", ".join(m.run_id for m in matches)
            raise InvalidInput(f"run: {run!r} is ambiguous; say which of {ids}", field="run")
        return matches[0]

    async def query(
        self, experiment: str | None, where: str | None, sort: str | None, limit: int
    ) -> list[Run]:
        predicate = parse_where(where)  # a bad query fails before any read
        sort_runs([], sort)
        runs = await asyncio.to_thread(self._all)
        chosen = [r for r in runs if (experiment is None or r.experiment == experiment)]
        return sort_runs([r for r in chosen if predicate(r)], sort)[:limit]

    async def experiments(self) -> list[dict[str, Any]]:
        return experiments(await asyncio.to_thread(self._all))

    async def compare(self, runs: list[str]) -> list[Run]:
        if not 1 <= len(runs) <= MAX_COMPARED:
            raise InvalidInput(f"runs: compare 1 to {MAX_COMPARED} runs", field="runs")
        return [await self.get(run) for run in runs]

    def _all(self) -> list[Run]:
        found = []
        for key in self.runs.keys(""):
            try:
                versioned = self.runs.get_or_none(key)
            except CairnError as error:
                log.warning("skipping unreadable run %s: %s", key, error)
                continue
            if versioned is not None:
                found.append(versioned.doc)
        return found
