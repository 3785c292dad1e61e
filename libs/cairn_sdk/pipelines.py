"""Pipelines: a Python builder that writes the definition document, and the pipelines API.

    pipeline = Pipeline("credit", parameters={"dataset": "dataset://credit@latest"})
    split = pipeline.processing("split", builtin="train-validation-split", inputs=[...],
                                outputs=[{"output_name": "train"}], cache="P30D")
    train = pipeline.training("train", algorithm="xgboost",
                              input_channels=[{"name": "train", "uri": split.outputs["train"]}])
    pipeline.condition("good", train.metrics["auc"] >= 0.85, if_steps=[...], else_steps=[...])
    client.create_pipeline(pipeline)

Step handles give references (`train.model_artifact` is `{"get": "steps.train.model_artifact"}`
in the document); comparing references makes conditions, combined with `And`, `Or`, `Not`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import yaml
from cairn.errors import Unavailable

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

PIPELINES: ServiceName = "pipelines"
TERMINAL = ("Succeeded", "Failed", "Stopped")


class Ref:
    """A reference to a parameter or a step's property; compare it to make a condition."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __getattr__(self, name: str) -> Ref:
        if name.startswith("_"):
            raise AttributeError(name)
        return Ref(f"{self.path}.{name}")

    def __getitem__(self, name: str) -> Ref:
        return Ref(f"{self.path}.{name}")

    def _compare(self, op: str, other: Any) -> Cond:
        return Cond({"op": op, "left": _encode(self), "right": _encode(other)})

    def __eq__(self, other: object) -> Cond:  # type: ignore[override]
        return self._compare("==", other)

    def __ne__(self, other: object) -> Cond:  # type: ignore[override]
        return self._compare("!=", other)

    def __gt__(self, other: Any) -> Cond:
        return self._compare(">", other)

    def __ge__(self, other: Any) -> Cond:
        return self._compare(">=", other)

    def __lt__(self, other: Any) -> Cond:
        return self._compare("<", other)

    def __le__(self, other: Any) -> Cond:
        return self._compare("<=", other)

    def is_in(self, values: Iterable[Any]) -> Cond:
        return self._compare("in", list(values))

    __hash__ = None  # type: ignore[assignment]


class Cond:
    """A condition node of the document."""

    def __init__(self, node: dict[str, Any]) -> None:
        self.node = node


def And(*conditions: Cond) -> Cond:
    return Cond({"and": [c.node for c in conditions]})


def Or(*conditions: Cond) -> Cond:
    return Cond({"or": [c.node for c in conditions]})


def Not(condition: Cond) -> Cond:
    return Cond({"not": condition.node})


def _encode(value: Any) -> Any:
    if isinstance(value, Ref):
        return {"get": value.path}
    if isinstance(value, StepHandle):
        raise TypeError(f"use a property of step {value.name!r}, not the step itself")
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    return value


class StepHandle:
    """A step added to a pipeline; its attributes are references to its properties."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, name: str) -> Ref:
        if name.startswith("_"):
            raise AttributeError(name)
        return Ref(f"steps.{self.name}.{name}")


def _retry(retry: dict[str, Any] | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if retry is None:
        return []
    return [retry] if isinstance(retry, dict) else list(retry)


class Pipeline:
    """Builds a definition document step by step (`to_dict`, `to_yaml`, `to_json`)."""

    def __init__(
        self,
        name: str,
        *,
        parameters: dict[str, Any] | None = None,
        description: str = "",
        max_parallel_steps: int = 10,
    ) -> None:
        self.name = name
        self.description = description
        self.max_parallel_steps = max_parallel_steps
        self.parameters: dict[str, dict[str, Any]] = {}
        self.steps: list[dict[str, Any]] = []
        for key, default in (parameters or {}).items():
            self.parameter(key, default)

    def parameter(self, name: str, default: Any = None, type: str | None = None) -> Ref:
        """Declare a parameter (its type from the default unless given); returns its reference."""
        kind = type or {bool: "boolean", int: "integer", float: "float"}.get(
            default.__class__, "string"
        )
        self.parameters[name] = {"type": kind, "default": default}
        return Ref(f"parameters.{name}")

    def param(self, name: str) -> Ref:
        return Ref(f"parameters.{name}")

    def step(
        self,
        name: str,
        step_type: str,
        *,
        arguments: dict[str, Any] | None = None,
        depends_on: Iterable[StepHandle | str] = (),
        retry: dict[str, Any] | list[dict[str, Any]] | None = None,
        cache: str | bool | None = None,
        timeout_s: float | None = None,
        **extra: Any,
    ) -> StepHandle:
        """Add any step; `cache` is True or an ISO-8601 ExpireAfter (`P30D`)."""
        body: dict[str, Any] = {"name": name, "type": step_type}
        if arguments:
            body["arguments"] = _encode(arguments)
        if depends_on:
            body["depends_on"] = [d.name if isinstance(d, StepHandle) else d for d in depends_on]
        if retry:
            body["retry"] = _retry(retry)
        if cache:
            body["cache"] = {"enabled": True} | (
                {"expire_after": cache} if isinstance(cache, str) else {}
            )
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        body.update({key: value for key, value in extra.items() if value is not None})
        self.steps.append(body)
        return StepHandle(name)

    def processing(self, name: str, **arguments: Any) -> StepHandle:
        return self.step(name, "Processing", **_split_options(arguments))

    def training(self, name: str, **arguments: Any) -> StepHandle:
        return self.step(name, "Training", **_split_options(arguments))

    def tuning(self, name: str, **arguments: Any) -> StepHandle:
        return self.step(name, "Tuning", **_split_options(arguments))

    def transform(self, name: str, **arguments: Any) -> StepHandle:
        return self.step(name, "Transform", **_split_options(arguments))

    def register_model(self, name: str, **arguments: Any) -> StepHandle:
        return self.step(name, "RegisterModel", **_split_options(arguments))

    def deploy(self, name: str, **arguments: Any) -> StepHandle:
        return self.step(name, "Deploy", **_split_options(arguments))

    def callback(
        self, name: str, *, outputs: dict[str, str] | None = None, **arguments: Any
    ) -> StepHandle:
        """Waits for `PipelineCallbackRequested` with the token its waiting event announces."""
        return self.step(name, "Callback", outputs=outputs or None, **_split_options(arguments))

    def fail(self, name: str, error_message: Any = "failed") -> StepHandle:
        return self.step(name, "Fail", error_message=_encode(error_message))

    def condition(
        self,
        name: str,
        condition: Cond,
        *,
        if_steps: Iterable[StepHandle | str] = (),
        else_steps: Iterable[StepHandle | str] = (),
    ) -> StepHandle:
        return self.step(
            name,
            "Condition",
            condition=condition.node,
            if_steps=[s.name if isinstance(s, StepHandle) else s for s in if_steps],
            else_steps=[s.name if isinstance(s, StepHandle) else s for s in else_steps],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "parallelism": {"max_parallel_steps": self.max_parallel_steps},
            "steps": self.steps,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        return str(yaml.safe_dump(self.to_dict(), sort_keys=False))


_OPTIONS = ("depends_on", "retry", "cache", "timeout_s")


def _split_options(given: dict[str, Any]) -> dict[str, Any]:
    options = {key: given.pop(key) for key in _OPTIONS if key in given}
    return {"arguments": given, **options}


def definition_of(pipeline: Pipeline | dict[str, Any]) -> dict[str, Any]:
    return pipeline.to_dict() if isinstance(pipeline, Pipeline) else dict(pipeline)


class PipelineCalls(ServiceCaller):
    """The pipelines service's API: definitions, executions, callbacks and triggers."""

    def create_pipeline(
        self, pipeline: Pipeline | dict[str, Any], name: str | None = None
    ) -> dict[str, Any]:
        definition = definition_of(pipeline)
        body = {"name": name or definition.get("name"), "definition": definition}
        return dict(self._json("POST", PIPELINES, "/pipelines", json=body))

    def update_pipeline(self, name: str, pipeline: Pipeline | dict[str, Any]) -> dict[str, Any]:
        body = {"definition": definition_of(pipeline)}
        return dict(self._json("PUT", PIPELINES, f"/pipelines/{name}", json=body))

    def describe_pipeline(self, name: str, version: int | None = None) -> dict[str, Any]:
        params = {"version": version} if version else None
        return dict(self._json("GET", PIPELINES, f"/pipelines/{name}", params=params))

    def list_pipelines(self) -> list[dict[str, Any]]:
        return list(self._json("GET", PIPELINES, "/pipelines")["pipelines"])

    def start_pipeline(self, name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"parameters": parameters or {}}
        return dict(self._json("POST", PIPELINES, f"/pipelines/{name}/executions", json=body))

    def list_pipeline_executions(self, name: str | None = None) -> list[dict[str, Any]]:
        path = f"/pipelines/{name}/executions" if name else "/pipeline-executions"
        return list(self._json("GET", PIPELINES, path)["executions"])

    def describe_pipeline_execution(self, execution_id: str) -> dict[str, Any]:
        return dict(self._json("GET", PIPELINES, f"/pipeline-executions/{execution_id}"))

    def stop_pipeline_execution(self, execution_id: str) -> dict[str, Any]:
        path = f"/pipeline-executions/{execution_id}/stop"
        return dict(self._json("POST", PIPELINES, path))

    def retry_pipeline_execution(self, execution_id: str) -> dict[str, Any]:
        path = f"/pipeline-executions/{execution_id}/retry"
        return dict(self._json("POST", PIPELINES, path))

    def send_pipeline_callback(
        self,
        token: str,
        *,
        succeeded: bool = True,
        outputs: dict[str, Any] | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        body = {
            "status": "Succeeded" if succeeded else "Failed",
            "outputs": outputs or {},
            "reason": reason,
        }
        path = f"/pipeline-executions/callbacks/{token}"
        return dict(self._json("POST", PIPELINES, path, json=body))

    def add_pipeline_trigger(
        self,
        pipeline_name: str,
        *,
        on: str | None = None,
        where: str | None = None,
        schedule: str | None = None,
        parameters: dict[str, Any] | None = None,
        trigger_name: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "trigger_name": trigger_name,
            "on": on,
            "where": where,
            "schedule": schedule,
            "parameters": parameters or {},
        }
        path = f"/pipelines/{pipeline_name}/triggers"
        return dict(self._json("POST", PIPELINES, path, json=body))

    def list_pipeline_triggers(self) -> list[dict[str, Any]]:
        return list(self._json("GET", PIPELINES, "/pipeline-triggers")["triggers"])

    def remove_pipeline_trigger(self, trigger_name: str) -> dict[str, Any]:
        return dict(self._json("DELETE", PIPELINES, f"/pipeline-triggers/{trigger_name}"))

    def wait_for_pipeline_execution(
        self,
        execution_id: str,
        *,
        timeout_s: float = 24 * 3600,
        poll_s: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the execution succeeds, fails or stops (through a service restart)."""
        deadline = time.monotonic() + timeout_s
        path = f"/pipeline-executions/{execution_id}"
        while True:
            execution = dict(self._json_through_restarts("GET", PIPELINES, path))
            if on_progress is not None:
                on_progress(execution)
            if execution["status"] in TERMINAL:
                return execution
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"pipeline execution {execution_id} still {execution['status']} "
                    f"after {timeout_s}s"
                )
            time.sleep(poll_s)
