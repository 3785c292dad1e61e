"""References at run time: what `{"get": "steps.train.model_artifact"}` names in an execution,
and a condition's outcome. Kept apart from the state machine, which calls them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.pipelines.definition import is_ref

if TYPE_CHECKING:
    from services.pipelines.domain import Execution


class MissingProperty(Exception):
    """A reference names a property the step did not report (a metric it never logged)."""


def lookup(execution: Execution, ref: str) -> Any:
    parts = ref.split(".")
    if parts[0] == "parameters":
        return execution.parameters[parts[1]]
    if parts[0] == "execution":
        return execution.execution_id if parts[1] == "id" else execution.pipeline_name
    value: Any = execution.steps[parts[1]].properties
    for part in parts[2:]:
        if not isinstance(value, dict) or part not in value:
            raise MissingProperty(f"step {parts[1]!r} did not report {'.'.join(parts[2:])!r}")
        value = value[part]
    return value


def resolve(execution: Execution, value: Any) -> Any:
    """A JSON value with every reference replaced by what it names."""
    if is_ref(value):
        return lookup(execution, value["get"])
    if isinstance(value, dict):
        return {key: resolve(execution, item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(execution, item) for item in value]
    return value


def evaluate(execution: Execution, node: dict[str, Any]) -> bool:
    if "and" in node:
        return all(evaluate(execution, item) for item in node["and"])
    if "or" in node:
        return any(evaluate(execution, item) for item in node["or"])
    if "not" in node:
        return not evaluate(execution, node["not"])
    left, right = resolve(execution, node["left"]), resolve(execution, node["right"])
    compare: dict[str, Any] = {
        "==": lambda: left == right,
        "!=": lambda: left != right,
        ">": lambda: left > right,
        ">=": lambda: left >= right,
        "<": lambda: left < right,
        "<=": lambda: left <= right,
        "in": lambda: left in right,
    }
    return bool(compare[node["op"]]())
