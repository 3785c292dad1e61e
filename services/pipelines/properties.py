"""What each step type yields (its properties, typed) and which request it sends.

Later steps and conditions reference these properties (`steps.train.model_artifact`,
`steps.evaluate.metrics.auc`); their types are known here so a definition is checked before it
runs. Each executing step type maps to the owning service's existing `...Requested` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cairn.contracts.batch_events import TransformJobRequested
from cairn.contracts.events import DeploymentRequested, TrainingJobRequested
from cairn.contracts.pipeline_events import ModelRegistrationRequested
from cairn.contracts.processing_events import ProcessingJobRequested
from cairn.contracts.tuner_events import HyperParameterTuningJobRequested
from cairn.errors import InvalidInput
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from services.pipelines.definition import Step

# The request each executing step type sends, and the field the pipeline fills with its id.
REQUESTS: dict[str, tuple[type[BaseModel], str | None]] = {
    "Training": (TrainingJobRequested, "job_name"),
    "Processing": (ProcessingJobRequested, "job_name"),
    "Tuning": (HyperParameterTuningJobRequested, "tuning_job_name"),
    "Transform": (TransformJobRequested, "job_name"),
    "RegisterModel": (ModelRegistrationRequested, None),
    "Deploy": (DeploymentRequested, None),
}
# Steps whose requests need the `deploy` scope of whoever starts the pipeline.
DEPLOY_STEPS = frozenset({"Transform", "Deploy"})

_FIXED: dict[str, dict[str, str]] = {
    "Training": {"job_name": "string", "model_artifact": "string"},
    "Processing": {"job_name": "string"},
    "Tuning": {
        "job_name": "string",
        "best_training_job": "string",
        "model_artifact": "string",
        "objective_value": "float",
    },
    "Transform": {"job_name": "string", "output_uri": "string"},
    "RegisterModel": {"model_package_group": "string", "version": "integer"},
    "Deploy": {"endpoint_name": "string", "revision": "integer"},
    "Condition": {"outcome": "boolean"},
    "Callback": {},
    "Fail": {},
}
_METRICS = frozenset({"Training", "Processing"})


def _processing_outputs(arguments: dict[str, Any]) -> list[str]:
    outputs = arguments.get("outputs")
    if not isinstance(outputs, list):
        return []
    return [o["output_name"] for o in outputs if isinstance(o, dict) and "output_name" in o]


def property_type(
    step_type: str, path: list[str], arguments: dict[str, Any], outputs: Mapping[str, str]
) -> str | None:
    """The type of `steps.<step>.<path>`; None when the step has no such property."""
    if len(path) == 1 and path[0] in _FIXED[step_type]:
        return _FIXED[step_type][path[0]]
    if len(path) == 2 and path[0] == "metrics" and step_type in _METRICS:
        return "float"  # metric names are known only when the job reports them
    if len(path) == 2 and path[0] == "outputs":
        if step_type == "Processing" and path[1] in _processing_outputs(arguments):
            return "string"
        if step_type == "Callback" and path[1] in outputs:
            return outputs[path[1]]
    return None


def known_properties(
    step_type: str, arguments: dict[str, Any], outputs: Mapping[str, str]
) -> list[str]:
    known = list(_FIXED[step_type])
    if step_type in _METRICS:
        known.append("metrics.<name>")
    if step_type == "Processing":
        known += [f"outputs.{name}" for name in _processing_outputs(arguments)]
    if step_type == "Callback":
        known += [f"outputs.{name}" for name in outputs]
    return known or ["(none)"]


PLACEHOLDERS: dict[str, Any] = {
    "string": "placeholder",
    "integer": 1,
    "float": 1.0,
    "boolean": True,
    "any": "placeholder",
}


def _text(value: Any) -> Any:
    return (
        str(value).lower()
        if isinstance(value, bool)
        else (str(value) if isinstance(value, int | float) else value)
    )


def build_request(step_type: str, arguments: dict[str, Any], request_id: str) -> BaseModel:
    """The owning service's request for a step with resolved arguments."""
    model, id_field = REQUESTS[step_type]
    fields = dict(arguments)
    if step_type == "Processing":
        # A script's arguments and environment are strings: a referenced metric is formatted in.
        if isinstance(fields.get("arguments"), list):
            fields["arguments"] = [_text(item) for item in fields["arguments"]]
        if isinstance(fields.get("environment"), dict):
            fields["environment"] = {k: _text(v) for k, v in fields["environment"].items()}
    if id_field is not None:
        fields[id_field] = request_id
    return model.model_validate(fields)


def check_arguments(step: Step, placeheld: dict[str, Any], where: str) -> None:
    """A step's arguments must make a valid request (`placeheld`: references replaced by
    placeholders of their types)."""
    if step.type not in REQUESTS:
        if step.arguments and step.type != "Callback":
            raise InvalidInput(f"{where}.arguments: a {step.type} step takes no arguments")
        return
    _, id_field = REQUESTS[step.type]
    if id_field is not None and id_field in step.arguments:
        raise InvalidInput(
            f"{where}.arguments.{id_field}: the pipeline names the job (deterministically)"
        )
    try:
        build_request(step.type, placeheld, "placeholder")
    except ValidationError as error:
        spots = "; ".join(
            f"{where}.arguments.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
            if item["loc"]
            else f"{where}.arguments: {item['msg']}"
            for item in error.errors()
        )
        raise InvalidInput(spots) from None
