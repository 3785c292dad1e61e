"""Moved to `cairn.inference` (one implementation with batch); names kept for importers."""

from cairn.inference.payloads import (
    CSV,
    JSON,
    JSONLINES,
    UnsupportedMediaType,
    explanation_records,
    format_response,
    media_type,
    parse_body,
    split_outputs,
)

__all__ = [
    "CSV",
    "JSON",
    "JSONLINES",
    "UnsupportedMediaType",
    "explanation_records",
    "format_response",
    "media_type",
    "parse_body",
    "split_outputs",
]
