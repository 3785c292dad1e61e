"""The JSONPath subset SageMaker's batch `DataProcessing` filters accept.

    $            the whole record
    .name        a child (also `['name']`)
    [i]          one element (negative counts from the end)
    [i,j,...]    several elements, as an array        ['a','b']  several keys, as an object
    [s:e]        a slice (either end optional, negatives allowed)
    * / [*]      every element (every value of an object, as an array)

Selecting one child goes down into it; selecting several builds a new array (or object), and
any later step applies to each of its elements. CSV rows are arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cairn.errors import InvalidInput

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INT = r"-?\d+"
_SLICE = re.compile(rf"^\s*({_INT})?\s*:\s*({_INT})?\s*$")
_QUOTED = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)")\s*""")


class InvalidJsonPath(InvalidInput):
    code = "invalid_jsonpath"


@dataclass(frozen=True)
class Step:
    """One step: `kind` is name, names, index, indexes, slice or all."""

    kind: str
    names: tuple[str, ...] = ()
    indexes: tuple[int, ...] = ()
    start: int | None = None
    stop: int | None = None

    @property
    def fans_out(self) -> bool:
        return self.kind in ("names", "indexes", "slice", "all")


@dataclass(frozen=True)
class JsonPath:
    """A parsed path; `select(value)` applies it."""

    text: str
    steps: tuple[Step, ...]

    @property
    def is_identity(self) -> bool:
        return not self.steps

    def select(self, value: Any) -> Any:
        """The part of `value` the path names; KeyError/IndexError/TypeError when it is absent."""
        return _apply(self.steps, value)

    def column_indexes(self, width: int) -> list[int] | None:
        """For a flat array of `width`: the indexes an array-only path keeps, in order.

        None when the path is not one array step on the row (a name, or several steps).
        """
        if not self.steps:
            return list(range(width))
        if len(self.steps) != 1:
            return None
        step = self.steps[0]
        if step.kind == "all":
            return list(range(width))
        if step.kind == "slice":
            return list(range(width))[step.start : step.stop]
        if step.kind == "indexes":
            return [_position(index, width) for index in step.indexes]
        return None


def parse_jsonpath(text: str, *, field: str = "jsonpath") -> JsonPath:
    """Parse a filter; InvalidJsonPath (400) names the field and the position of the mistake."""
    source = text.strip()
    if not source.startswith("$"):
        raise _error(field, text, 0, "a path starts with '$'")
    position, steps = 1, []
    while position < len(source):
        step, position = _next_step(source, position, field, text)
        steps.append(step)
    return JsonPath(text, tuple(steps))


def _next_step(source: str, position: int, field: str, text: str) -> tuple[Step, int]:
    char = source[position]
    if char == ".":
        if source[position + 1 : position + 2] == "*":
            return Step("all"), position + 2
        match = _NAME.match(source, position + 1)
        if match is None:
            raise _error(field, text, position, "expected a name after '.'")
        return Step("name", names=(match.group(),)), match.end()
    if char == "[":
        end = source.find("]", position)
        if end < 0:
            raise _error(field, text, position, "'[' is never closed")
        return _bracket(source[position + 1 : end], field, text, position), end + 1
    raise _error(field, text, position, f"unexpected {char!r}")


def _bracket(inner: str, field: str, text: str, position: int) -> Step:
    if inner.strip() == "*":
        return Step("all")
    if ":" in inner:
        match = _SLICE.match(inner)
        if match is None:
            raise _error(field, text, position, f"[{inner}] is not a slice [start:end]")
        start, stop = (int(group) if group else None for group in match.groups())
        return Step("slice", start=start, stop=stop)
    parts = inner.split(",")
    if all(re.fullmatch(rf"\s*{_INT}\s*", part) for part in parts):
        indexes = tuple(int(part) for part in parts)
        return Step("index" if len(indexes) == 1 else "indexes", indexes=indexes)
    names = []
    for part in parts:
        match = _QUOTED.fullmatch(part)
        if match is None:
            raise _error(field, text, position, f"[{inner}] mixes names and numbers or is unquoted")
        names.append(match.group(1) if match.group(1) is not None else match.group(2))
    return Step("name" if len(names) == 1 else "names", names=tuple(names))


def _error(field: str, text: str, position: int, why: str) -> InvalidJsonPath:
    return InvalidJsonPath(
        f"{field}: {text!r} is not a supported JSONPath ({why}, at {position})", field=field
    )


def _apply(steps: tuple[Step, ...], value: Any) -> Any:
    if not steps:
        return value
    step, rest = steps[0], steps[1:]
    if not step.fans_out:
        return _apply(rest, _child(step, value))
    picked = _many(step, value)
    if isinstance(picked, dict):
        return {key: _apply(rest, item) for key, item in picked.items()}
    return [_apply(rest, item) for item in picked]


def _child(step: Step, value: Any) -> Any:
    if step.kind == "name":
        if not isinstance(value, dict):
            raise TypeError(f"cannot take .{step.names[0]} of a {type(value).__name__}")
        return value[step.names[0]]
    return _require_list(value, step)[step.indexes[0]]


def _many(step: Step, value: Any) -> list[Any] | dict[str, Any]:
    if step.kind == "names":
        if not isinstance(value, dict):
            raise TypeError(f"cannot pick keys of a {type(value).__name__}")
        return {name: value[name] for name in step.names}
    if step.kind == "all":
        return list(value.values()) if isinstance(value, dict) else list(_require_list(value, step))
    items = _require_list(value, step)
    if step.kind == "slice":
        return list(items[step.start : step.stop])
    return [items[index] for index in step.indexes]


def _require_list(value: Any, step: Step) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"cannot index a {type(value).__name__} ({step.kind})")
    return value


def _position(index: int, width: int) -> int:
    if not -width <= index < width:
        raise IndexError(f"index {index} is outside a row of {width} values")
    return index % width
