"""Scoring a model: request payloads in, predictions and explanations out.

One implementation shared by everything that runs inference (the gateway, batch transform):

payloads   media types; CSV / JSON / JSON Lines bodies -> rows or records -> the input matrix;
           `format_response`, `prediction_records`, `explanation_records`
tables     Arrow tables (Parquet, CSV blocks) -> the input matrix, vectorised
tensors    Open Inference Protocol v2's binary tensor data extension: raw tensors in and out
Model loading and scoring is `cairn.artifacts.load_model` -> `LoadedModel.predict / explain`.
"""

from typing import TYPE_CHECKING, Any

from cairn.inference.payloads import (
    CSV,
    JSON,
    JSONLINES,
    Matrix,
    UnsupportedMediaType,
    encode_items,
    explanation_records,
    format_response,
    instances,
    media_type,
    parse_body,
    parse_items,
    prediction_records,
    split_outputs,
)

if TYPE_CHECKING:
    from cairn.inference.tables import encode_table

__all__ = [
    "CSV",
    "JSON",
    "JSONLINES",
    "Matrix",
    "UnsupportedMediaType",
    "encode_items",
    "encode_table",
    "explanation_records",
    "format_response",
    "instances",
    "media_type",
    "parse_body",
    "parse_items",
    "prediction_records",
    "split_outputs",
]


def __getattr__(name: str) -> Any:
    """`encode_table` imports pyarrow on first use: the edge agent parses payloads without it."""
    if name == "encode_table":
        from cairn.inference.tables import encode_table

        return encode_table
    raise AttributeError(name)
