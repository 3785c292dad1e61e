"""A simulated trainer for the tuner's unit tests: trials "train" in steps of `every` rounds, report
an objective curve, and honour stop requests, all in one process without a broker."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cairn.audit import AuditRecord
from cairn.auth import Principal
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    TrainingJobCompleted,
    TrainingJobFailed,
    TrainingJobProgressed,
    TrainingJobRequested,
)
from cairn.contracts.tuner_events import (
    HyperParameterTuningJobRequested,
    TrainingJobStopped,
    TrainingJobStopRequested,
)
from pydantic import BaseModel

from services.tuner.config import TunerSettings
from services.tuner.handlers import TunerHandlers

Curve = Callable[[dict[str, Any], int], float]


def default_curve(params: dict[str, Any], step: int) -> float:
    """An AUC-like objective: best near eta=0.1, max_depth=6, rising with rounds."""
    eta = float(params.get("eta", 0.1))
    depth = int(params.get("max_depth", 6))
    quality = 0.95 - 0.5 * abs(math.log10(eta) + 1) ** 2 * 0.1 - 0.01 * abs(depth - 6)
    return quality * (1 - math.exp(-step / 30))


def envelope(data: BaseModel) -> Envelope[Any]:
    return Envelope[Any](type=type(data).__name__, source="sim", correlation_id="c", data=data)


@dataclass
class Running:
    request: TrainingJobRequested
    step: int = 0
    stop: bool = False


@dataclass
class Sim:
    """The kernel's and the trainer's side of the tuner."""

    curve: Curve = default_curve
    every: int = 10
    fail_when: Callable[[dict[str, Any]], bool] = lambda params: False
    published: list[BaseModel] = field(default_factory=list)
    running: dict[str, Running] = field(default_factory=dict)
    requested_names: list[str] = field(default_factory=list)
    rounds_trained: int = 0
    dead_letters: list[str] = field(default_factory=list)
    _cursor: int = 0

    async def publish(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]:
        self.published.append(data)
        return envelope(data)

    async def dead_letter(self, env: Envelope[Any], reason: str, **_: Any) -> None:
        self.dead_letters.append(reason)

    async def principal_of(self, env: Envelope[Any]) -> Principal:
        return Principal(name="ds", key_id="ck_ds", scopes=frozenset({"train"}))

    async def audit(self, **fields: Any) -> AuditRecord:
        return AuditRecord(
            action=fields["action"], resource=fields["resource"], principal="x", outcome="success"
        )

    def of(self, kind: type[BaseModel]) -> list[Any]:
        return [e for e in self.published if isinstance(e, kind)]

    def handlers(self, store: Any) -> TunerHandlers:
        return TunerHandlers(store, TunerSettings(), self)

    def _take_new(self) -> None:
        for data in self.published[self._cursor :]:
            if isinstance(data, TrainingJobRequested):
                self.requested_names.append(data.job_name)
                if data.job_name not in self.running:
                    self.running[data.job_name] = Running(data)
            elif isinstance(data, TrainingJobStopRequested) and data.job_name in self.running:
                self.running[data.job_name].stop = True
        self._cursor = len(self.published)

    async def step(self, handlers: TunerHandlers) -> bool:
        """Every running trial trains `every` more rounds; False when nothing runs."""
        self._take_new()
        for name, run in list(self.running.items()):
            await self._advance(handlers, name, run)
            self._take_new()
        return bool(self.running)

    async def _advance(self, handlers: TunerHandlers, name: str, run: Running) -> None:
        params = dict(run.request.hyperparameters)
        if run.stop:
            del self.running[name]
            await handlers.on_stopped(
                envelope(TrainingJobStopped(job_name=name, iteration=run.step))
            )
            return
        if self.fail_when(params):
            del self.running[name]
            await handlers.on_failed(envelope(TrainingJobFailed(job_name=name, reason="boom")))
            return
        total = int(params.get("num_round", 100))
        run.step = min(total, run.step + self.every)
        self.rounds_trained += min(self.every, total - (run.step - self.every))
        metrics = {"validation:auc": self.curve(params, run.step)}
        await handlers.on_progress(
            envelope(TrainingJobProgressed(job_name=name, iteration=run.step, metrics=metrics))
        )
        if run.step >= total:
            del self.running[name]
            completed = TrainingJobCompleted(
                job_name=name,
                algorithm="xgboost",
                artifact_uri=f"models/{name}/",
                metrics=metrics,
                device="cpu",
                training_time_s=0.1,
                total_time_s=0.1,
            )
            await handlers.on_completed(envelope(completed))

    async def run(self, handlers: TunerHandlers, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            if not await self.step(handlers):
                self._take_new()
                if not self.running:
                    return
        raise AssertionError("the simulation did not settle")


def tuning_request(**overrides: Any) -> HyperParameterTuningJobRequested:
    fields: dict[str, Any] = {
        "tuning_job_name": "tune-1",
        "strategy": "Random",
        "objective": {"metric_name": "validation:auc", "type": "Maximize"},
        "parameter_ranges": {
            "continuous": [
                {"name": "eta", "min_value": 0.01, "max_value": 0.5, "scaling_type": "Logarithmic"}
            ],
            "integer": [{"name": "max_depth", "min_value": 2, "max_value": 10}],
        },
        "training_job_definition": {
            "algorithm": "xgboost",
            "input_channels": [
                {"name": "train", "uri": "data/credit/train.csv", "label_column": "default"},
                {"name": "validation", "uri": "data/credit/val.csv", "label_column": "default"},
            ],
            "static_hyperparameters": {"num_round": 100},
        },
        "resource_limits": {"max_number_of_training_jobs": 8, "max_parallel_training_jobs": 2},
        "random_seed": 7,
    }
    return HyperParameterTuningJobRequested.model_validate(fields | overrides)
