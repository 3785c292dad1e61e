"""Switch conditions of an inference graph: one expression evaluated over whole columns at once.

`income > 50000 and age < 30` is evaluated by simpleeval (no imports, calls, attributes or
dunders) with each column of the node's input bound to its name as a numpy array, so a batch of
rows costs one evaluation, not one per row. simpleeval's `and`, `or`, `not` and chained
comparisons use Python truthiness, which an array has not; they are overridden here to act per
element. The deployer evaluates every condition on one zero row at create time, so a condition
that does not parse, names an unknown column or uses what is not allowed is refused then.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from simpleeval import InvalidExpression, SimpleEval

FUNCTIONS: dict[str, Any] = {"abs": np.abs, "min": np.minimum, "max": np.maximum}


class ConditionError(ValueError):
    """A condition that does not parse or cannot be evaluated; the message says why."""


class _ColumnEval(SimpleEval):  # type: ignore[misc]
    def __init__(self, names: dict[str, Any]) -> None:
        super().__init__(functions=dict(FUNCTIONS), names=names)
        self.operators[ast.Not] = np.logical_not

    def _eval_boolop(self, node: ast.BoolOp) -> Any:
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = self._eval(node.values[0])
        for value in node.values[1:]:
            result = combine(result, self._eval(value))
        return result

    def _eval_compare(self, node: ast.Compare) -> Any:
        result: Any = True
        left = self._eval(node.left)
        for operation, comparator in zip(node.ops, node.comparators, strict=True):
            right = self._eval(comparator)
            result = np.logical_and(result, self.operators[type(operation)](left, right))
            left = right
        return result


class Condition:
    """A parsed condition over named columns; `mask` says which rows it holds for."""

    def __init__(self, expression: str, columns: Sequence[str]) -> None:
        self.expression = expression
        self.columns = list(columns)
        self._local = threading.local()
        try:
            self._tree = SimpleEval.parse(expression.strip())
        except SyntaxError as error:
            raise ConditionError(f"does not parse at column {error.offset}: {error.msg}") from None
        if any(isinstance(node, ast.Attribute | ast.Subscript) for node in ast.walk(self._tree)):
            raise ConditionError("uses an attribute or a subscript: name columns only")
        unknown = sorted(
            {
                node.id
                for node in ast.walk(self._tree)
                if isinstance(node, ast.Name) and node.id not in self.columns
            }
            - set(FUNCTIONS)
            - {"True", "False"}
        )
        if unknown:
            raise ConditionError(f"names {unknown}, not columns of the step's input {self.columns}")

    def mask(self, matrix: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """One boolean per row of `matrix` (its columns in `columns` order)."""
        names = {name: matrix[:, index] for index, name in enumerate(self.columns)}
        evaluator = getattr(self._local, "evaluator", None)
        if evaluator is None:  # one per thread: building one costs more than evaluating
            evaluator = self._local.evaluator = _ColumnEval({})
        evaluator.names = names
        try:
            result = evaluator.eval(self.expression, previously_parsed=self._tree)
            return np.broadcast_to(np.asarray(result, dtype=bool), (len(matrix),))
        except (InvalidExpression, TypeError, ValueError, ZeroDivisionError) as error:
            raise ConditionError(str(error) or type(error).__name__) from None

    def check(self) -> None:
        """Evaluate on one row of zeros: refuses at create time what would fail on requests."""
        self.mask(np.zeros((1, len(self.columns)), dtype=np.float32))
