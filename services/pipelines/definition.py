"""The pipeline definition document: parameters, steps, references, conditions, and its checks.

A definition is plain JSON (or YAML): values anywhere in a step's `arguments` may be references,
`{"get": "parameters.dataset"}` or `{"get": "steps.train.model_artifact"}`; the DAG is derived from
the step references (plus `depends_on`, plus a Condition's branches). `validate_definition` refuses,
naming the spot, a cycle, a reference to an unknown step or property, and a condition that
compares values of incompatible types: every such mistake is a 400 at create time, never a
failed execution later.
"""

from __future__ import annotations

import graphlib
from datetime import timedelta
from typing import Annotated, Any, Literal

from cairn.contracts.pipeline_events import PIPELINE_NAME, ParameterValue, StepType
from cairn.errors import InvalidInput
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from services.pipelines import properties

STEP_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"
ParameterType = Literal["string", "integer", "float", "boolean"]
Comparison = Literal["==", "!=", ">", ">=", "<", "<=", "in"]
_ORDERED = {">", ">=", "<", "<="}


def _iso_duration(value: Any) -> Any:
    if isinstance(value, str) and not value.upper().startswith("P"):
        raise ValueError(f"{value!r} is not an ISO-8601 duration (P30D, PT12H, P1DT6H)")
    if isinstance(value, int | float):
        raise ValueError("give an ISO-8601 duration (P30D, PT12H), not a number")
    return value


IsoDuration = Annotated[timedelta, BeforeValidator(_iso_duration)]


class InvalidDefinition(InvalidInput):
    code = "invalid_pipeline_definition"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ParameterSpec(_Doc):
    type: ParameterType = "string"
    default: ParameterValue | None = None


class RetryPolicy(_Doc):
    """SageMaker's retry policy: which failures, how long to wait, how often, for how long."""

    exception_types: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Failure codes the owning service reports (internal, algorithm_error, ...); "
        "`*` matches every one.",
    )
    interval_s: float = Field(default=1.0, ge=0, le=86_400)
    backoff_rate: float = Field(default=2.0, ge=1, le=10)
    max_attempts: int = Field(default=3, ge=1, le=20, description="Attempts in all, the first too.")
    expire_after: IsoDuration | None = Field(
        default=None, description="ISO-8601 duration since the first attempt; no retry after it."
    )


class CacheConfig(_Doc):
    enabled: bool = True
    expire_after: IsoDuration | None = Field(
        default=None, description="ISO-8601 duration (P30D, PT1H); a hit older than this misses."
    )


class Parallelism(_Doc):
    max_parallel_steps: int = Field(default=10, ge=1, le=1000)


class Step(_Doc):
    name: str = Field(pattern=STEP_NAME)
    type: StepType
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The owning service's request fields; refs allowed."
    )
    depends_on: list[str] = Field(default_factory=list)
    retry: list[RetryPolicy] = Field(default_factory=list)
    cache: CacheConfig | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    condition: dict[str, Any] | None = Field(default=None, description="Condition steps only.")
    if_steps: list[str] = Field(default_factory=list)
    else_steps: list[str] = Field(default_factory=list)
    error_message: Any = Field(default=None, description="Fail steps: a string or a reference.")
    outputs: dict[str, ParameterType] = Field(
        default_factory=dict, description="Callback steps: the outputs the callback sends."
    )

    @model_validator(mode="after")
    def _fields_of_type(self) -> Step:
        if (self.type == "Condition") != (self.condition is not None):
            raise ValueError("a Condition step has a `condition`; no other step has one")
        if self.type != "Condition" and (self.if_steps or self.else_steps):
            raise ValueError("only a Condition step has if_steps / else_steps")
        return self


class PipelineDefinition(_Doc):
    """The document a user writes (SDK builder, YAML or JSON)."""

    name: str | None = Field(default=None, pattern=PIPELINE_NAME)
    description: str = ""
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    parallelism: Parallelism = Field(default_factory=Parallelism)
    steps: list[Step] = Field(min_length=1, max_length=200)

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)


def parse_definition(raw: Any) -> PipelineDefinition:
    """The typed document; InvalidDefinition naming every bad field."""
    try:
        return PipelineDefinition.model_validate(raw)
    except ValidationError as error:
        where = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '<root>'}: {item['msg']}"
            for item in error.errors()
        )
        raise InvalidDefinition(f"invalid pipeline definition: {where}") from error


# References ------------------------------------------------------------------------------------


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"get"} and isinstance(value["get"], str)


def refs_in(value: Any, where: str) -> list[tuple[str, str]]:
    """Every `(reference, spot)` inside a JSON value."""
    if is_ref(value):
        return [(value["get"], where)]
    if isinstance(value, dict):
        return [ref for key, item in value.items() for ref in refs_in(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [ref for i, item in enumerate(value) for ref in refs_in(item, f"{where}[{i}]")]
    return []


def step_refs(step: Step) -> list[tuple[str, str]]:
    where = f"steps.{step.name}"
    found = refs_in(step.arguments, f"{where}.arguments")
    if step.condition is not None:
        found += refs_in(step.condition, f"{where}.condition")
    return found + refs_in(step.error_message, f"{where}.error_message")


def ref_type(definition: PipelineDefinition, ref: str, where: str) -> str:
    """The type a reference yields (string, integer, float, boolean, any); refuses unknown ones."""
    parts = ref.split(".")
    if parts[0] == "parameters" and len(parts) == 2:
        spec = definition.parameters.get(parts[1])
        if spec is None:
            raise InvalidDefinition(f"{where}: unknown parameter {parts[1]!r} in {ref!r}")
        return spec.type
    if parts[0] == "execution" and parts[1:] in (["id"], ["pipeline_name"]):
        return "string"
    if parts[0] != "steps" or len(parts) < 3:
        raise InvalidDefinition(
            f"{where}: {ref!r} is not a reference (parameters.NAME, steps.STEP.PROPERTY, "
            "execution.id)"
        )
    names = {step.name for step in definition.steps}
    if parts[1] not in names:
        raise InvalidDefinition(f"{where}: {ref!r} names an unknown step {parts[1]!r}")
    target = definition.step(parts[1])
    found = properties.property_type(target.type, parts[2:], target.arguments, target.outputs)
    if found is None:
        known = ", ".join(
            properties.known_properties(target.type, target.arguments, target.outputs)
        )
        raise InvalidDefinition(
            f"{where}: step {parts[1]!r} ({target.type}) has no property "
            f"{'.'.join(parts[2:])!r}; it has: {known}"
        )
    return found


def _placeheld(definition: PipelineDefinition, value: Any, where: str) -> Any:
    """`value` with each reference replaced by a sample of its type."""
    if is_ref(value):
        return properties.PLACEHOLDERS[ref_type(definition, value["get"], where)]
    if isinstance(value, dict):
        return {key: _placeheld(definition, item, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_placeheld(definition, item, where) for item in value]
    return value


# Conditions ------------------------------------------------------------------------------------


def _operand_type(definition: PipelineDefinition, value: Any, where: str) -> str:
    if is_ref(value):
        return ref_type(definition, value["get"], where)
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    raise InvalidDefinition(f"{where}: {value!r} is not a value a condition can compare")


def _compatible(left: str, right: str, op: str) -> bool:
    if "any" in (left, right):
        return True
    numbers = {"integer", "float"}
    if op == "in":
        return right == "list"
    if left in numbers and right in numbers:
        return True
    if op in _ORDERED:
        return left == right == "string"
    return left == right


def check_condition(definition: PipelineDefinition, node: Any, where: str) -> None:
    """`{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}` or `{"op", "left", "right"}`, nested."""
    if not isinstance(node, dict):
        raise InvalidDefinition(f"{where}: a condition is an object, got {node!r}")
    if set(node) in ({"and"}, {"or"}):
        (kind,) = node
        items = node[kind]
        if not isinstance(items, list) or not items:
            raise InvalidDefinition(f"{where}.{kind}: needs a non-empty list of conditions")
        for i, item in enumerate(items):
            check_condition(definition, item, f"{where}.{kind}[{i}]")
        return
    if set(node) == {"not"}:
        check_condition(definition, node["not"], f"{where}.not")
        return
    if set(node) != {"op", "left", "right"}:
        raise InvalidDefinition(
            f"{where}: expected and / or / not, or op + left + right; got keys {sorted(node)}"
        )
    op = node["op"]
    if op not in ("==", "!=", ">", ">=", "<", "<=", "in"):
        raise InvalidDefinition(f"{where}.op: unknown comparison {op!r}")
    left = _operand_type(definition, node["left"], f"{where}.left")
    right = _operand_type(definition, node["right"], f"{where}.right")
    if not _compatible(left, right, op):
        raise InvalidDefinition(
            f"{where}: cannot compare {left} {op} {right} ({node['left']!r} {op} {node['right']!r})"
        )


# The DAG ---------------------------------------------------------------------------------------


def dependencies(definition: PipelineDefinition) -> dict[str, set[str]]:
    """Step -> the steps it waits for (references, depends_on, the Condition it is a branch of)."""
    deps: dict[str, set[str]] = {step.name: set(step.depends_on) for step in definition.steps}
    for step in definition.steps:
        for ref, _ in step_refs(step):
            parts = ref.split(".")
            if parts[0] == "steps" and len(parts) > 1:
                deps[step.name].add(parts[1])
        for branch in [*step.if_steps, *step.else_steps]:
            if branch in deps:
                deps[branch].add(step.name)
    return deps


def branch_owner(definition: PipelineDefinition) -> dict[str, tuple[str, bool]]:
    """Step -> (the Condition step, the outcome it runs on) for every branch step."""
    owners: dict[str, tuple[str, bool]] = {}
    for step in definition.steps:
        owners.update({name: (step.name, True) for name in step.if_steps})
        owners.update({name: (step.name, False) for name in step.else_steps})
    return owners


def validate_definition(definition: PipelineDefinition) -> list[str]:
    """Refuse what cannot run, naming the spot; returns the steps in an order they can run."""
    names = [step.name for step in definition.steps]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidDefinition(f"steps: duplicate step names {duplicates}")
    for name, spec in definition.parameters.items():
        if spec.default is not None:
            coerce_parameter(name, spec, spec.default)
    for step in definition.steps:
        where = f"steps.{step.name}"
        for dep in step.depends_on:
            if dep not in names:
                raise InvalidDefinition(f"{where}.depends_on: unknown step {dep!r}")
        for key, branch in (("if_steps", step.if_steps), ("else_steps", step.else_steps)):
            for name in branch:
                if name not in names:
                    raise InvalidDefinition(f"{where}.{key}: unknown step {name!r}")
        for ref, spot in step_refs(step):
            ref_type(definition, ref, spot)
        if step.condition is not None:
            check_condition(definition, step.condition, f"{where}.condition")
        placeheld = _placeheld(definition, step.arguments, f"{where}.arguments")
        properties.check_arguments(step, placeheld, where)
    owners: dict[str, str] = {}
    for step in definition.steps:
        for name in [*step.if_steps, *step.else_steps]:
            if name in owners:
                raise InvalidDefinition(
                    f"steps.{step.name}: step {name!r} is already a branch of {owners[name]!r}"
                )
            owners[name] = step.name
    sorter = graphlib.TopologicalSorter(dependencies(definition))
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise InvalidDefinition(f"steps: the references form a cycle: {cycle}") from None


def coerce_parameter(name: str, spec: ParameterSpec, value: Any) -> ParameterValue:
    """A parameter's value as its declared type (CLI values arrive as strings)."""
    try:
        if spec.type == "string":
            return str(value)
        if spec.type == "boolean":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if isinstance(value, bool):
            raise ValueError(value)
        if spec.type == "integer":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        return float(value)
    except (TypeError, ValueError):
        raise InvalidDefinition(
            f"parameters.{name}: {value!r} is not a {spec.type}", parameter=name
        ) from None


def resolve_parameters(
    definition: PipelineDefinition, given: dict[str, Any]
) -> dict[str, ParameterValue]:
    """Defaults plus what the caller gave, typed; unknown or missing parameters are refused."""
    unknown = sorted(set(given) - set(definition.parameters))
    if unknown:
        raise InvalidDefinition(
            f"unknown parameters {unknown}; the pipeline has {sorted(definition.parameters)}"
        )
    resolved: dict[str, ParameterValue] = {}
    for name, spec in definition.parameters.items():
        value = given.get(name, spec.default)
        if value is None:
            raise InvalidDefinition(f"parameters.{name}: required (it has no default)")
        resolved[name] = coerce_parameter(name, spec, value)
    return resolved
