"""Scoring a model: request payloads in, predictions and explanations out.

One implementation shared by everything that runs inference (the gateway, batch transform):

payloads   media types; CSV / JSON / JSON Lines bodies -> rows or records -> the input matrix;
           `format_response`, `prediction_records`, `explanation_records`
tables     Arrow tables (Parquet, CSV blocks) -> the input matrix, vectorised
Model loading and scoring is `cairn.artifacts.load_model` -> `LoadedModel.predict / explain`.
"""

from cairn.inference.payloads import (
    CSV,
    JSON,
    JSONLINES,
    Matrix,
    UnsupportedMediaType,
    encode_items,
    explanation_records,
    format_response,
    media_type,
    parse_body,
    parse_items,
    prediction_records,
    split_outputs,
)
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
    "media_type",
    "parse_body",
    "parse_items",
    "prediction_records",
    "split_outputs",
]
