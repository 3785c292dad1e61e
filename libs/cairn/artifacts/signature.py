"""Turn request rows into the float32 matrix a model takes, in signature order.

A signature with a `text` column gives an object matrix instead: text cells stay strings (a
missing one is ""), the other cells are floats as usual; the model's own code reads the strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cairn.artifacts.manifest import InputColumn
from cairn.errors import InvalidInput

Cell = str | float | int | bool | None


class SignatureMismatch(InvalidInput):
    """A request's rows do not fit the model's input signature (count, names or types)."""

    code = "signature_mismatch"


class SignatureEncoder:
    """Encodes rows or records for one signature; categories map to codes, unseen ones to NaN."""

    def __init__(self, inputs: Sequence[InputColumn]) -> None:
        self.inputs = list(inputs)
        self.names = [column.name for column in self.inputs]
        self._positions = {name: index for index, name in enumerate(self.names)}
        self._codes: list[dict[str, float] | None] = [
            {value: float(code) for code, value in enumerate(column.categories or [])}
            if column.dtype == "category"
            else None
            for column in self.inputs
        ]
        self._text = [column.dtype == "text" for column in self.inputs]
        self.dtype: type = object if any(self._text) else np.float32

    def encode_rows(self, rows: Sequence[Sequence[Cell]]) -> npt.NDArray[np.float32]:
        """A (len(rows), n_inputs) float32 matrix; SignatureMismatch names the bad row/column."""
        width = len(self.inputs)
        matrix: npt.NDArray[Any] = np.empty((len(rows), width), dtype=self.dtype)
        for row_index, row in enumerate(rows):
            if len(row) != width:
                raise SignatureMismatch(
                    f"row {row_index} has {len(row)} values; the model takes {width} "
                    f"({', '.join(self.names)})",
                    row=row_index,
                    expected=width,
                    got=len(row),
                )
            for column_index, value in enumerate(row):
                matrix[row_index, column_index] = self._cell(row_index, column_index, value)
        return matrix

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
        """Like `encode_rows`, by column name; a missing or unknown column is a mismatch."""
        expected = set(self.names)
        rows: list[list[Cell]] = []
        for record_index, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise SignatureMismatch(f"record {record_index} is not an object", row=record_index)
            keys = set(record)
            if keys != expected:
                missing, extra = sorted(expected - keys), sorted(keys - expected)
                raise SignatureMismatch(
                    f"record {record_index}: missing columns {missing}, unknown columns {extra}",
                    row=record_index,
                    missing=missing,
                    unknown=extra,
                )
            rows.append([record[name] for name in self.names])
        return self.encode_rows(rows)

    def _cell(self, row_index: int, column_index: int, value: Cell) -> float | str:
        if self._text[column_index]:
            return "" if value is None else str(value)
        codes = self._codes[column_index]
        if value is None:
            return math.nan
        if codes is not None:
            if isinstance(value, float) and math.isnan(value):
                return math.nan
            key = _category_key(value)
            return codes.get(key, math.nan)
        if isinstance(value, bool):
            return float(value)
        try:
            number = float(value) if isinstance(value, int | float) else self._parse(value)
        except (ValueError, OverflowError):
            raise self._not_a_number(value, row_index, column_index, "is not a number") from None
        if math.isinf(number):
            raise self._not_a_number(value, row_index, column_index, "is not a finite number")
        return number

    @staticmethod
    def _parse(value: Cell) -> float:
        text = str(value).strip()
        return math.nan if text == "" else float(text)

    def _not_a_number(
        self, value: Cell, row_index: int, column_index: int, problem: str
    ) -> SignatureMismatch:
        column = self.inputs[column_index]
        shown = str(value).strip()
        shown = shown if len(shown) <= 50 else f"{shown[:20]}...({len(shown)} characters)"
        return SignatureMismatch(
            f"row {row_index}, column {column_index} ({column.name!r}): {shown!r} {problem}",
            row=row_index,
            column=column.name,
        )


def _category_key(value: Cell) -> str:
    """Category values are stored as strings; 3.0 in a request matches the category "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
