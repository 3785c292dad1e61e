"""The model package manifest: what a model is, what it takes and gives, and how it was made."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cairn.contracts.envelope import utc_now

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

# torch: safetensors weights + a JSON architecture; rrcf: trees as JSON; gensim: vectors only.
Framework = Literal["xgboost", "sklearn", "script", "torch", "rrcf", "gensim"]
Task = Literal[
    "binary_classification",
    "multiclass_classification",
    "regression",
    "clustering",
    "dimensionality_reduction",
    "anomaly_detection",
    "topic_model",
    "embedding",
    "custom",
]
# `text` columns stay strings: the model's own code tokenises or hashes them (see cairn.builtins).
InputDtype = Literal["float", "int", "category", "text"]


def _finite(value: Any) -> Any:
    """Refuse inf and NaN anywhere inside a free-form JSON value (JSON cannot carry them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("Input should be a finite number")
    if isinstance(value, dict):
        for item in value.values():
            _finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _finite(item)
    return value


FiniteJson = Annotated[Any, AfterValidator(_finite)]
"""A free-form JSON value (hyperparameters, lineage) with no non-finite number in it."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InputColumn(_Model):
    """One input column; a `category` column is encoded as its index in `categories`."""

    name: str
    dtype: InputDtype
    categories: list[str] | None = None


class OutputColumn(_Model):
    name: str
    dtype: Literal["float", "int"] = "float"


class Signature(_Model):
    """Ordered inputs (the column order of every request row) and named outputs."""

    inputs: list[InputColumn] = Field(default_factory=list)
    outputs: list[OutputColumn] = Field(default_factory=list)


class DatasetLineage(_Model):
    channel: str
    uri: str
    sha256: str
    files: dict[str, str] = Field(default_factory=dict, description="Store key -> sha256.")


class Lineage(_Model):
    training_job: str | None = None
    algorithm: str
    hyperparameters: dict[str, FiniteJson] = Field(default_factory=dict)
    datasets: list[DatasetLineage] = Field(default_factory=list)


class ModelManifest(_Model):
    """The `manifest.json` of a model package; `files` maps each file to its sha256."""

    format_version: int = FORMAT_VERSION
    framework: Framework
    framework_version: str
    algorithm: str
    task: Task
    signature: Signature
    label_column: str | None = None
    class_labels: list[str] | None = Field(
        default=None, description="Original label value of each class index (classifiers)."
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)
    lineage: Lineage
    created_at: datetime = Field(default_factory=utc_now)
    device: Literal["cpu", "gpu"] = "cpu"
    details: dict[str, FiniteJson] = Field(
        default_factory=dict, description="Algorithm specifics (e.g. which anomaly detector)."
    )
