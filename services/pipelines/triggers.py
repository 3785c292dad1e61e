"""Triggers (EventBridge rules): an event type and a filter, or a cron schedule, start a pipeline.

A filter is one expression over the envelope (`type`, `source`, `correlation_id`, ...) and its
`data`, e.g. `data.dataset_name == "credit" and data.row_count > 1000`. It is evaluated by
simpleeval (a restricted evaluator: no imports, no dunder attributes, no calls but a few
conversions), never by `eval`. Parameter templates copy fields of the event into parameters:
`{data.uri}` alone keeps the field's type, inside other text it is formatted in.
"""

from __future__ import annotations

import ast
import hashlib
import re
import uuid
from datetime import datetime
from typing import Any

from cairn.contracts.catalogue import spec_for
from cairn.contracts.envelope import Envelope
from cairn.errors import InvalidInput
from croniter import croniter
from pydantic import BaseModel, Field, model_validator
from simpleeval import EvalWithCompoundTypes, InvalidExpression

TRIGGERS = "pipelines/triggers/"
TRIGGER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"
ENVELOPE_NAMES = frozenset(
    {"data", "type", "source", "event_id", "occurred_at", "correlation_id", "causation_id"}
    | {"schema_version", "key_id"}
)
FUNCTIONS: dict[str, Any] = {"int": int, "float": float, "str": str, "len": len}
_TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_NAMESPACE = uuid.UUID("5d3c3a1e-8f57-4b8e-9d4e-0c6f3e7f9b10")


class InvalidTrigger(InvalidInput):
    code = "invalid_trigger"


class TriggerRequest(BaseModel):
    """What `cairn pipelines trigger add` sends."""

    trigger_name: str | None = Field(default=None, pattern=TRIGGER_NAME)
    on: str | None = Field(default=None, description="A catalogue event type.")
    where: str | None = Field(default=None, max_length=2000)
    schedule: str | None = Field(default=None, description="A cron expression (UTC).")
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> TriggerRequest:
        if (self.on is None) == (self.schedule is None):
            raise ValueError("give `on` (an event type) or `schedule` (cron), not both")
        if self.schedule is not None and self.where is not None:
            raise ValueError("a schedule has no event to filter: drop `where`")
        return self


class Trigger(BaseModel):
    trigger_name: str
    pipeline_name: str
    event_type: str | None = None
    where: str | None = None
    schedule: str | None = None
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    created_by: str
    created_at: datetime
    last_due_at: datetime | None = Field(default=None, description="Schedules: last due time run.")


def _check_filter(expression: str, event_type: str) -> None:
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise InvalidTrigger(
            f"where: the filter does not parse at column {error.offset}: {error.msg}"
        ) from None
    fields = set(spec_for(event_type).model.model_fields)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in ENVELOPE_NAMES | set(FUNCTIONS):
            raise InvalidTrigger(f"where: unknown name {node.id!r}; use {sorted(ENVELOPE_NAMES)}")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "data"
            and node.attr not in fields
        ):
            raise InvalidTrigger(
                f"where: {event_type} has no field {node.attr!r} (data.{node.attr}); "
                f"it has {sorted(fields)}"
            )


def _check_template(name: str, template: Any, event_type: str | None) -> None:
    if not isinstance(template, str):
        return
    for path in _TEMPLATE.findall(template):
        parts = path.split(".")
        if event_type is None:
            raise InvalidTrigger(f"parameters.{name}: a schedule has no event fields ({path})")
        if parts[0] not in ENVELOPE_NAMES:
            raise InvalidTrigger(f"parameters.{name}: unknown field {path!r}")
        fields = spec_for(event_type).model.model_fields
        if parts[0] == "data" and (len(parts) < 2 or parts[1] not in fields):
            raise InvalidTrigger(f"parameters.{name}: {event_type} has no field {path!r}")


def make_trigger(
    request: TriggerRequest, pipeline_name: str, created_by: str, now: datetime
) -> Trigger:
    """A checked trigger: the event type is catalogued, the filter parses, fields exist."""
    if request.on is not None:
        spec_for(request.on)  # UnknownEventType: 400 naming the known ones
        if request.where is not None:
            _check_filter(request.where, request.on)
    if request.schedule is not None and not croniter.is_valid(request.schedule):
        raise InvalidTrigger(f"schedule: {request.schedule!r} is not a cron expression")
    for name, template in request.parameters.items():
        _check_template(name, template, request.on)
    digest = hashlib.sha256(f"{request.on or request.schedule}/{request.where}".encode())
    return Trigger(
        trigger_name=request.trigger_name or f"{pipeline_name}-{digest.hexdigest()[:8]}",
        pipeline_name=pipeline_name,
        event_type=request.on,
        where=request.where,
        schedule=request.schedule,
        parameters=request.parameters,
        created_by=created_by,
        created_at=now,
    )


def names_of(envelope: Envelope[Any]) -> dict[str, Any]:
    names: dict[str, Any] = envelope.model_dump(mode="json", exclude={"signature"})
    return names


def matches(trigger: Trigger, names: dict[str, Any]) -> bool:
    """Whether the filter holds; a filter that fails on this event (a missing field) does not."""
    if trigger.where is None:
        return True
    evaluator = EvalWithCompoundTypes(names=names, functions=FUNCTIONS)
    try:
        return bool(evaluator.eval(trigger.where))
    except (InvalidExpression, TypeError, ValueError, KeyError, IndexError, ArithmeticError):
        return False


def _path(names: dict[str, Any], path: str) -> Any:
    value: Any = names
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def parameters_for(trigger: Trigger, names: dict[str, Any]) -> dict[str, Any]:
    """The parameters an event maps to; KeyError when a field it names is absent."""
    mapped: dict[str, Any] = {}
    for name, template in trigger.parameters.items():
        if not isinstance(template, str):
            mapped[name] = template
            continue
        whole = _TEMPLATE.fullmatch(template)
        if whole is not None:
            mapped[name] = _path(names, whole.group(1))
        else:
            mapped[name] = _TEMPLATE.sub(lambda m: str(_path(names, m.group(1))), template)
    return mapped


def execution_id_for(trigger_name: str, occurrence: str) -> str:
    """The same event (or due time) always names the same execution: it starts once."""
    return uuid.uuid5(_NAMESPACE, f"{trigger_name}/{occurrence}").hex


def due_time(trigger: Trigger, now: datetime) -> datetime | None:
    """The latest due time of a schedule not run yet (missed ones are not run one by one)."""
    if trigger.schedule is None:
        return None
    after = trigger.last_due_at or trigger.created_at
    due: datetime = croniter(trigger.schedule, after).get_next(datetime)
    if due > now:
        return None
    latest: datetime = croniter(trigger.schedule, now).get_prev(datetime)
    return max(due, latest)
