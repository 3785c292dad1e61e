"""Arrow tables (Parquet row groups, CSV blocks) into a model's input matrix, column at a time.

The vectorised twin of `LoadedModel.encode_rows`: numbers become float32 (null -> NaN), category
columns map to their codes with unseen values as NaN, exactly as the row encoder does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from cairn.artifacts import InputColumn, LoadedModel, SignatureMismatch

Matrix = npt.NDArray[np.float32]


def encode_table(model: LoadedModel, table: pa.Table, *, by_name: bool) -> Matrix:
    """The (rows, n_inputs) matrix of `table`: columns by signature name, or in order.

    Raises:
        SignatureMismatch: a missing column, a wrong column count, or a value that is not a
            number in a numeric column (the caller may fall back to encoding row by row).
    """
    inputs = model.manifest.signature.inputs
    if by_name:
        missing = [column.name for column in inputs if column.name not in table.column_names]
        if missing:
            raise SignatureMismatch(
                f"the input has no column {missing[0]!r} (the model takes "
                f"{', '.join(model.input_names)})",
                missing=missing,
            )
        columns = [table.column(column.name) for column in inputs]
    else:
        if table.num_columns != len(inputs):
            raise SignatureMismatch(
                f"rows have {table.num_columns} values; the model takes {len(inputs)} "
                f"({', '.join(model.input_names)})",
                expected=len(inputs),
                got=table.num_columns,
            )
        columns = list(table.columns)
    text = any(spec.dtype == "text" for spec in inputs)
    matrix = np.empty((table.num_rows, len(inputs)), dtype=object if text else np.float32)
    for index, (spec, column) in enumerate(zip(inputs, columns, strict=True)):
        matrix[:, index] = _encode_column(spec, column)
    return matrix


def _encode_column(spec: InputColumn, column: pa.ChunkedArray) -> npt.NDArray[Any]:
    if spec.dtype == "text":  # strings for the model's own tokeniser; null -> ""
        strings = pc.fill_null(pc.cast(column, pa.string()), "")
        return np.asarray(strings.to_pylist(), dtype=object)
    if spec.dtype == "category":
        categories = pa.array(spec.categories or [], type=pa.string())
        values = column if pa.types.is_string(column.type) else _category_strings(column)
        codes = pc.index_in(values, value_set=categories)
        return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.float32)
    if pa.types.is_boolean(column.type) or pa.types.is_integer(column.type):
        column = column.cast(pa.float64())
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            blank = pc.equal(pc.utf8_trim_whitespace(column), "")
            column = pc.cast(pc.if_else(blank, None, column), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise SignatureMismatch(
                f"column {spec.name!r} holds a value that is not a number ({error})",
                column=spec.name,
            ) from None
    elif not pa.types.is_floating(column.type) and not pa.types.is_null(column.type):
        raise SignatureMismatch(
            f"column {spec.name!r} has type {column.type}; the model takes numbers",
            column=spec.name,
        )
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan, dtype=np.float32)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float32)


def _category_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Numbers stored as category values match their string form (3.0 -> "3")."""
    if pa.types.is_floating(column.type):
        as_int = pc.cast(column, pa.int64(), safe=False)
        whole = pc.equal(pc.cast(as_int, column.type), column)
        return pc.if_else(whole, pc.cast(as_int, pa.string()), pc.cast(column, pa.string()))
    return pc.cast(column, pa.string())
