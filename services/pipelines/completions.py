"""Which events end a step, and what they say: the owning services' own completion facts.

A step waits under a key (`training/<job>`, `endpoint/<name>`, ...) written before its request is
published; each completion or failure event names the same key, so the pipelines service finds the
execution and step it answers. Events for keys nobody waits on belong to other users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cairn.contracts.batch_events import (
    TransformJobCompleted,
    TransformJobFailed,
    TransformJobStopped,
)
from cairn.contracts.events import (
    DeploymentFailed,
    DeploymentRolledBack,
    EndpointUpdated,
    ModelPackageRegistered,
    TrainingJobCompleted,
    TrainingJobFailed,
)
from cairn.contracts.pipeline_events import ModelRegistrationFailed, PipelineCallbackRequested
from cairn.contracts.processing_events import ProcessingJobCompleted, ProcessingJobFailed
from cairn.contracts.tuner_events import (
    HyperParameterTuningJobCompleted,
    HyperParameterTuningJobFailed,
    HyperParameterTuningJobStopped,
    TrainingJobStopped,
)
from pydantic import BaseModel


@dataclass(frozen=True)
class Outcome:
    """A step's end: its properties, or a failure code (what retry policies match) and reason."""

    wait_key: str
    properties: dict[str, Any] | None = None
    code: str = ""
    reason: str = ""

    @property
    def succeeded(self) -> bool:
        return self.properties is not None


def wait_key(step_type: str, request: dict[str, Any], callback_token: str | None = None) -> str:
    """The key a started step waits under, from the request it sent."""
    if step_type == "Callback":
        return f"callback/{callback_token}"
    if step_type == "RegisterModel":
        return f"registration/{request['model_package_group']}/{request['training_job']}"
    if step_type == "Deploy":
        return f"endpoint/{request['endpoint_name']}"
    if step_type == "Tuning":
        return f"tuning/{request['tuning_job_name']}"
    return f"{step_type.lower()}/{request['job_name']}"


def _training(e: TrainingJobCompleted) -> Outcome:
    props = {"job_name": e.job_name, "model_artifact": e.artifact_uri, "metrics": e.metrics}
    return Outcome(f"training/{e.job_name}", props)


def _processing(e: ProcessingJobCompleted) -> Outcome:
    props = {
        "job_name": e.job_name,
        "outputs": {out.output_name: out.uri for out in e.outputs},
        "metrics": e.metrics,
    }
    return Outcome(f"processing/{e.job_name}", props)


def _tuning(e: HyperParameterTuningJobCompleted) -> Outcome:
    best = e.best_training_job
    if best is None or best.artifact_uri is None:
        return Outcome(f"tuning/{e.tuning_job_name}", None, "no_best_job", e.reason or "no trial")
    props = {
        "job_name": e.tuning_job_name,
        "best_training_job": best.training_job_name,
        "model_artifact": best.artifact_uri,
        "objective_value": best.objective_value,
    }
    return Outcome(f"tuning/{e.tuning_job_name}", props)


def _registered(e: ModelPackageRegistered) -> Outcome | None:
    if e.training_job is None:
        return None
    props = {"model_package_group": e.model_package_group, "version": e.version}
    return Outcome(f"registration/{e.model_package_group}/{e.training_job}", props)


def _endpoint(e: EndpointUpdated) -> Outcome | None:
    key = f"endpoint/{e.endpoint_name}"
    if e.status in ("InService", "Deleted"):
        return Outcome(key, {"endpoint_name": e.endpoint_name, "revision": e.revision})
    if e.status == "Failed":
        return Outcome(key, None, "deployment_failed", f"endpoint {e.endpoint_name} failed")
    return None


def _callback(e: PipelineCallbackRequested) -> Outcome:
    key = f"callback/{e.callback_token}"
    if e.status == "Succeeded":
        return Outcome(key, {"outputs": dict(e.outputs)})
    return Outcome(key, None, "callback_failed", e.reason or "the callback reported a failure")


Reader = Callable[[Any], Outcome | None]
COMPLETIONS: dict[type[BaseModel], Reader] = {
    TrainingJobCompleted: _training,
    TrainingJobFailed: lambda e: Outcome(f"training/{e.job_name}", None, e.failure_code, e.reason),
    TrainingJobStopped: lambda e: Outcome(f"training/{e.job_name}", None, "stopped", "stopped"),
    ProcessingJobCompleted: _processing,
    ProcessingJobFailed: lambda e: Outcome(
        f"processing/{e.job_name}", None, e.failure_code, e.reason
    ),
    HyperParameterTuningJobCompleted: _tuning,
    HyperParameterTuningJobFailed: lambda e: Outcome(
        f"tuning/{e.tuning_job_name}", None, "tuning_failed", e.reason
    ),
    HyperParameterTuningJobStopped: lambda e: Outcome(
        f"tuning/{e.tuning_job_name}", None, "stopped", "stopped"
    ),
    TransformJobCompleted: lambda e: Outcome(
        f"transform/{e.job_name}", {"job_name": e.job_name, "output_uri": e.output_path}
    ),
    TransformJobFailed: lambda e: Outcome(
        f"transform/{e.job_name}", None, "transform_failed", e.reason
    ),
    TransformJobStopped: lambda e: Outcome(f"transform/{e.job_name}", None, "stopped", "stopped"),
    ModelPackageRegistered: _registered,
    ModelRegistrationFailed: lambda e: Outcome(
        f"registration/{e.model_package_group}/{e.training_job}", None, "invalid_input", e.reason
    ),
    EndpointUpdated: _endpoint,
    DeploymentFailed: lambda e: Outcome(
        f"endpoint/{e.endpoint_name}", None, e.failure_code, e.reason
    ),
    DeploymentRolledBack: lambda e: Outcome(
        f"endpoint/{e.endpoint_name}", None, "rolled_back", e.reason
    ),
    PipelineCallbackRequested: _callback,
}
