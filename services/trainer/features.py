"""Turn channel DataFrames into model inputs: infer the signature, encode categories and labels.

The encoding here and `cairn.artifacts.SignatureEncoder` must agree: a category becomes its index
in the sorted category list seen in the train channel, anything unseen becomes NaN. With
`text_inputs`, non-numeric columns are `text` instead and the matrix holds their strings (object
dtype), as the servers pass them to models that tokenise or hash text themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from cairn.artifacts import InputColumn
from cairn.errors import InvalidInput

LabelMode = Literal["classes", "values", "none"]
DEFAULT_LABEL_COLUMN = "label"


@dataclass
class TrainingData:
    """Encoded matrices in signature order, plus what the manifest needs to decode outputs."""

    inputs: list[InputColumn]
    label_column: str | None
    x_train: npt.NDArray[Any]  # float32; object (strings in text columns) with text inputs
    y_train: npt.NDArray[np.float64] | None
    x_validation: npt.NDArray[Any] | None = None
    y_validation: npt.NDArray[np.float64] | None = None
    class_labels: list[str] | None = None

    @property
    def feature_names(self) -> list[str]:
        return [column.name for column in self.inputs]

    @property
    def feature_types(self) -> list[str]:
        """XGBoost's feature types: `c` for categorical codes, `q` for numbers."""
        return ["c" if column.dtype == "category" else "q" for column in self.inputs]

    @property
    def has_categories(self) -> bool:
        return any(column.dtype == "category" for column in self.inputs)


def label_key(value: object) -> str:
    """A label or category as the string the manifest keeps (3.0 -> "3")."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def pick_label_column(frame: pd.DataFrame, requested: str | None, mode: LabelMode) -> str | None:
    """The requested label column, else `label`, else the first column (SageMaker's CSV rule)."""
    if requested is not None:
        if requested not in frame.columns:
            raise InvalidInput(
                f"label column {requested!r} is not in the train channel "
                f"(columns: {list(frame.columns)})"
            )
        return requested
    if mode == "none":
        return None
    if DEFAULT_LABEL_COLUMN in frame.columns:
        return DEFAULT_LABEL_COLUMN
    return str(frame.columns[0])


def infer_inputs(frame: pd.DataFrame, *, text_inputs: bool = False) -> list[InputColumn]:
    """Input columns in file order: numbers stay numbers, anything else is a category (text)."""
    inputs = []
    for name in frame.columns:
        series = frame[name]
        textual = pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series)
        if textual and text_inputs:
            inputs.append(InputColumn(name=str(name), dtype="text"))
        elif textual:
            categories = sorted({label_key(value) for value in series.dropna().unique()})
            inputs.append(InputColumn(name=str(name), dtype="category", categories=categories))
        elif pd.api.types.is_integer_dtype(series):
            inputs.append(InputColumn(name=str(name), dtype="int"))
        else:
            inputs.append(InputColumn(name=str(name), dtype="float"))
    if not inputs:
        raise InvalidInput("the train channel has no feature columns besides the label")
    return inputs


def encode_frame(frame: pd.DataFrame, inputs: list[InputColumn]) -> npt.NDArray[Any]:
    """A float32 matrix in signature order; a missing column is an error, extra ones are ignored."""
    missing = [column.name for column in inputs if column.name not in frame.columns]
    if missing:
        raise InvalidInput(f"columns {missing} are missing (the train channel has them)")
    text = any(column.dtype == "text" for column in inputs)
    matrix = np.empty((len(frame), len(inputs)), dtype=object if text else np.float32)
    for index, column in enumerate(inputs):
        series = frame[column.name]
        if column.dtype == "text":
            matrix[:, index] = ["" if _is_missing(value) else str(value) for value in series]
        elif column.dtype == "category":
            codes = {value: float(code) for code, value in enumerate(column.categories or [])}
            matrix[:, index] = [
                np.nan if _is_missing(value) else codes.get(label_key(value), np.nan)
                for value in series
            ]
        else:
            try:
                matrix[:, index] = pd.to_numeric(series, errors="raise").astype(np.float32)
            except (ValueError, TypeError) as error:
                raise InvalidInput(f"column {column.name!r} is not numeric: {error}") from error
    return matrix


def prepare(
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    *,
    label_column: str | None,
    mode: LabelMode,
    text_inputs: bool = False,
) -> TrainingData:
    """Signature, matrices and labels for an algorithm that wants `mode` labels."""
    label = pick_label_column(train, label_column, mode)
    features = train.drop(columns=[label]) if label is not None else train
    inputs = infer_inputs(features, text_inputs=text_inputs)
    data = TrainingData(
        inputs=inputs,
        label_column=label,
        x_train=encode_frame(train, inputs),
        y_train=None,
    )
    if validation is not None:
        data.x_validation = encode_frame(validation, inputs)
    if mode == "none" or label is None:
        return data
    if mode == "classes":
        data.class_labels = sorted({label_key(v) for v in train[label].dropna().unique()})
        if len(data.class_labels) < 2:
            raise InvalidInput(f"label column {label!r} holds fewer than two classes")
    data.y_train = _encode_labels(train, label, data.class_labels, "train")
    if validation is not None:
        if label not in validation.columns:
            raise InvalidInput(f"label column {label!r} is not in the validation channel")
        data.y_validation = _encode_labels(validation, label, data.class_labels, "validation")
    return data


def _encode_labels(
    frame: pd.DataFrame, label: str, classes: list[str] | None, channel: str
) -> npt.NDArray[np.float64]:
    series = frame[label]
    if series.isna().any():
        raise InvalidInput(f"the {channel} channel has rows without a {label!r} label")
    if classes is None:
        try:
            numeric: npt.NDArray[np.float64] = pd.to_numeric(series, errors="raise").to_numpy(
                dtype=np.float64
            )
            return numeric
        except (ValueError, TypeError) as error:
            raise InvalidInput(f"label column {label!r} is not numeric: {error}") from error
    index = {value: code for code, value in enumerate(classes)}
    keys = [label_key(value) for value in series]
    unknown = sorted(set(keys) - set(index))
    if unknown:
        raise InvalidInput(f"the {channel} channel has labels not in train: {unknown[:10]}")
    return np.array([index[key] for key in keys], dtype=np.float64)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
