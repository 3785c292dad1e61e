"""An execution's state and how it moves: pure functions from (state, fact, now) to state.

The execution document holds every step's state and an outbox of events still to publish: a
transition and the events it causes are one conditional write, and the service publishes the
outbox afterwards (again after a restart), so nothing is lost between the two. Step requests are
named deterministically from (execution, step, attempt), so publishing one twice asks for the same
job, which its owning service runs once.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Any, Literal

from cairn.contracts.pipeline_events import ParameterValue
from pydantic import BaseModel, Field

from services.pipelines.definition import (
    PipelineDefinition,
    RetryPolicy,
    branch_owner,
    dependencies,
    validate_definition,
)
from services.pipelines.references import MissingProperty, evaluate, resolve

StepStatus = Literal["Pending", "Executing", "Retrying", "Succeeded", "Failed", "Skipped"]
ExecutionStatus = Literal["Executing", "Succeeded", "Failed", "Stopped"]
TERMINAL: frozenset[str] = frozenset({"Succeeded", "Failed", "Stopped"})
EXECUTIONS = "pipelines/executions/"


class StepState(BaseModel):
    status: StepStatus = "Pending"
    attempt: int = Field(default=0, ge=0)
    request_id: str | None = None
    cache_key: str | None = None
    cache_hit: bool = False
    source_execution_id: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    failure_reason: str | None = None
    exception_type: str | None = None
    first_started_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    retry_at: datetime | None = None
    callback_token: str | None = None


class Outgoing(BaseModel):
    """An event to publish: written with the transition that causes it, removed once sent."""

    id: str
    type: str
    data: dict[str, Any]


class Execution(BaseModel):
    execution_id: str
    pipeline_name: str
    pipeline_version: int
    definition: PipelineDefinition
    parameters: dict[str, ParameterValue]
    status: ExecutionStatus = "Executing"
    steps: dict[str, StepState]
    outbox: list[Outgoing] = Field(default_factory=list)
    started_by: str
    trigger_name: str | None = None
    created_at: datetime
    ended_at: datetime | None = None
    failure_reason: str | None = None
    failed_step: str | None = None

    def emit(self, event_type: str, data: dict[str, Any], event_key: str) -> None:
        if all(item.id != event_key for item in self.outbox):
            self.outbox.append(Outgoing(id=event_key, type=event_type, data=data))

    def base(self) -> dict[str, str]:
        return {"execution_id": self.execution_id, "pipeline_name": self.pipeline_name}


def execution_key(execution_id: str) -> str:
    return f"{execution_id}.json"


def new_execution(
    *,
    execution_id: str,
    pipeline_name: str,
    version: int,
    definition: PipelineDefinition,
    parameters: dict[str, ParameterValue],
    started_by: str,
    now: datetime,
    trigger_name: str | None = None,
) -> Execution:
    execution = Execution(
        execution_id=execution_id,
        pipeline_name=pipeline_name,
        pipeline_version=version,
        definition=definition,
        parameters=parameters,
        steps={step.name: StepState() for step in definition.steps},
        started_by=started_by,
        trigger_name=trigger_name,
        created_at=now,
    )
    execution.emit(
        "PipelineExecutionStarted",
        {
            **execution.base(),
            "pipeline_version": version,
            "parameters": parameters,
            "started_by": started_by,
            "trigger_name": trigger_name,
        },
        "started",
    )
    return execution


def _slug(text: str, size: int) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower())[:size].strip("-") or "x"


def request_id(execution: Execution, step_name: str, attempt: int) -> str:
    """The job name of a step's attempt: readable, and the same every time it is computed."""
    digest = hashlib.sha256(f"{execution.execution_id}/{step_name}/{attempt}".encode()).hexdigest()
    return f"{_slug(execution.pipeline_name, 24)}-{_slug(step_name, 20)}-{digest[:12]}"


# Transitions -----------------------------------------------------------------------------------


def _step_event(execution: Execution, name: str) -> dict[str, Any]:
    return {
        **execution.base(),
        "step_name": name,
        "step_type": execution.definition.step(name).type,
    }


def _finish(execution: Execution, status: ExecutionStatus, now: datetime, **why: Any) -> None:
    execution.status = status
    execution.ended_at = now
    if status == "Failed":
        execution.failure_reason = why["reason"]
        execution.failed_step = why.get("failed_step")
        execution.emit(
            "PipelineExecutionFailed",
            {**execution.base(), "reason": why["reason"], "failed_step": why.get("failed_step")},
            "failed",
        )
    elif status == "Succeeded":
        execution.emit("PipelineExecutionSucceeded", execution.base(), "succeeded")
    else:
        execution.emit(
            "PipelineExecutionStopped",
            {**execution.base(), "stopped_by": why["stopped_by"]},
            "stopped",
        )


def _succeed_step(
    execution: Execution,
    name: str,
    props: dict[str, Any],
    now: datetime,
    *,
    cache_hit: bool = False,
) -> None:
    state = execution.steps[name]
    state.status, state.properties, state.ended_at = "Succeeded", props, now
    state.cache_hit = cache_hit
    execution.emit(
        "PipelineStepSucceeded",
        {
            **_step_event(execution, name),
            "properties": props,
            "cache_hit": cache_hit,
            "source_execution_id": state.source_execution_id,
        },
        f"{name}:{state.attempt}:succeeded",
    )


def _fail_for_good(execution: Execution, name: str, reason: str, now: datetime) -> None:
    state = execution.steps[name]
    state.status, state.failure_reason, state.ended_at = "Failed", reason, now
    if execution.status == "Executing":
        _finish(execution, "Failed", now, reason=f"step {name}: {reason}", failed_step=name)


def settle(execution: Execution, now: datetime) -> list[str]:
    """Skip, evaluate and fail what needs no other service; return the steps that may start.

    Conditions and Fail steps run here (they are pure); a step behind a skipped step or on the
    branch its condition did not take is skipped. The steps returned fit the parallelism cap.
    """
    if execution.status != "Executing":
        return []
    definition = execution.definition
    order = validate_definition(definition)
    deps, owners = dependencies(definition), branch_owner(definition)
    changed = True
    while changed and execution.status == "Executing":
        changed = False
        for name in order:
            state = execution.steps[name]
            if state.status != "Pending":
                continue
            statuses = {execution.steps[dep].status for dep in deps[name]}
            owner = owners.get(name)
            off_branch = (
                owner is not None
                and execution.steps[owner[0]].status == "Succeeded"
                and execution.steps[owner[0]].properties.get("outcome") != owner[1]
            )
            if "Skipped" in statuses or off_branch:
                state.status, state.ended_at, changed = "Skipped", now, True
                continue
            if statuses - {"Succeeded"}:
                continue
            step = definition.step(name)
            if step.type == "Condition" and step.condition is not None:
                changed = True
                try:
                    outcome = evaluate(execution, step.condition)
                except (MissingProperty, TypeError) as error:
                    _fail_for_good(execution, name, str(error), now)
                    break
                state.attempt, state.started_at = 1, now
                _succeed_step(execution, name, {"outcome": outcome}, now)
            elif step.type == "Fail":
                changed = True
                try:
                    message = str(resolve(execution, step.error_message) or "a Fail step ran")
                except MissingProperty as error:
                    message = str(error)
                _fail_for_good(execution, name, message, now)
    if execution.status != "Executing":
        return []
    if all(state.status in ("Succeeded", "Skipped") for state in execution.steps.values()):
        _finish(execution, "Succeeded", now)
        return []
    busy = sum(state.status in ("Executing", "Retrying") for state in execution.steps.values())
    slots = max(0, definition.parallelism.max_parallel_steps - busy)
    ready = [
        name
        for name in order
        if execution.steps[name].status == "Pending"
        and all(execution.steps[dep].status == "Succeeded" for dep in deps[name])
    ]
    return ready[:slots]


def start_step(
    execution: Execution,
    name: str,
    *,
    request: tuple[str, dict[str, Any]] | None,
    cache_key: str | None,
    now: datetime,
    callback_token: str | None = None,
    callback_payload: dict[str, Any] | None = None,
) -> bool:
    """Pending -> Executing with its request in the outbox; False when it moved meanwhile."""
    state = execution.steps[name]
    if execution.status != "Executing" or state.status != "Pending":
        return False
    state.attempt += 1
    state.status, state.started_at, state.retry_at = "Executing", now, None
    state.first_started_at = state.first_started_at or now
    state.request_id = request_id(execution, name, state.attempt)
    state.cache_key, state.callback_token = cache_key, callback_token
    if request is not None:
        execution.emit(request[0], request[1], f"{name}:{state.attempt}:request")
    if callback_token is not None:
        execution.emit(
            "PipelineCallbackWaiting",
            {
                **execution.base(),
                "step_name": name,
                "callback_token": callback_token,
                "payload": callback_payload or {},
            },
            f"{name}:{state.attempt}:callback",
        )
    execution.emit(
        "PipelineStepStarted",
        {
            **_step_event(execution, name),
            "attempt": state.attempt,
            "request_id": state.request_id,
            "cache_key": cache_key,
        },
        f"{name}:{state.attempt}:started",
    )
    return True


def use_cache(
    execution: Execution,
    name: str,
    cache_key: str,
    props: dict[str, Any],
    source: str,
    now: datetime,
) -> bool:
    """Pending -> Succeeded from an earlier run's result; no request is sent."""
    state = execution.steps[name]
    if execution.status != "Executing" or state.status != "Pending":
        return False
    state.attempt += 1
    state.started_at, state.cache_key, state.source_execution_id = now, cache_key, source
    _succeed_step(execution, name, props, now, cache_hit=True)
    return True


def step_succeeded(
    execution: Execution, name: str, attempt: int, props: dict[str, Any], now: datetime
) -> bool:
    state = execution.steps[name]
    if state.status != "Executing" or state.attempt != attempt:
        return False  # a late or repeated answer to an attempt already settled
    _succeed_step(execution, name, props, now)
    return True


def _policy_for(policies: list[RetryPolicy], code: str) -> RetryPolicy | None:
    return next(
        (p for p in policies if "*" in p.exception_types or code in p.exception_types), None
    )


def step_failed(
    execution: Execution, name: str, attempt: int, code: str, reason: str, now: datetime
) -> bool:
    """Executing -> Retrying (its policy allows another attempt) or Failed (the execution too)."""
    state = execution.steps[name]
    if state.status != "Executing" or state.attempt != attempt:
        return False
    state.failure_reason, state.exception_type = reason, code
    policy = _policy_for(execution.definition.step(name).retry, code)
    first = state.first_started_at or now
    retry = (
        policy is not None
        and execution.status == "Executing"
        and attempt < policy.max_attempts
        and (policy.expire_after is None or now - first < policy.expire_after)
    )
    execution.emit(
        "PipelineStepFailed",
        {
            **_step_event(execution, name),
            "attempt": attempt,
            "reason": reason,
            "exception_type": code,
            "will_retry": retry,
        },
        f"{name}:{attempt}:failed",
    )
    if retry and policy is not None:
        wait = policy.interval_s * policy.backoff_rate ** (attempt - 1)
        state.status, state.retry_at = "Retrying", now + timedelta(seconds=wait)
    else:
        _fail_for_good(execution, name, reason, now)
    return True


def wake(execution: Execution, now: datetime) -> list[tuple[str, int]]:
    """Due retries go back to Pending; returns the executing steps past their timeout."""
    late: list[tuple[str, int]] = []
    for name, state in execution.steps.items():
        if state.status == "Retrying" and state.retry_at is not None and state.retry_at <= now:
            state.status, state.retry_at = "Pending", None
        timeout = execution.definition.step(name).timeout_s
        if (
            state.status == "Executing"
            and timeout is not None
            and state.started_at is not None
            and now - state.started_at > timedelta(seconds=timeout)
        ):
            late.append((name, state.attempt))
    return late


def stop(execution: Execution, stopped_by: str, now: datetime) -> None:
    if execution.status == "Executing":
        for state in execution.steps.values():
            if state.status == "Retrying":
                state.status, state.retry_at = "Pending", None
        _finish(execution, "Stopped", now, stopped_by=stopped_by)


def retry(execution: Execution, now: datetime) -> None:
    """A failed or stopped execution runs again from its failed steps (succeeded ones stay)."""
    if execution.status not in ("Failed", "Stopped"):
        return
    for state in execution.steps.values():
        if state.status in ("Failed", "Retrying", "Skipped"):
            state.status, state.retry_at, state.first_started_at = "Pending", None, None
    execution.status, execution.ended_at = "Executing", None
    execution.failure_reason = execution.failed_step = None
    for key in ("failed", "stopped", "succeeded"):
        execution.outbox = [item for item in execution.outbox if item.id != key]
