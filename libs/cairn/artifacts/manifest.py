"""The model package manifest: what a model is, what it takes and gives, and how it was made."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cairn.contracts.envelope import utc_now

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

Framework = Literal["xgboost", "sklearn", "script"]
Task = Literal[
    "binary_classification",
    "multiclass_classification",
    "regression",
    "clustering",
    "dimensionality_reduction",
    "anomaly_detection",
    "custom",
]
InputDtype = Literal["float", "int", "category"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
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
    details: dict[str, Any] = Field(
        default_factory=dict, description="Algorithm specifics (e.g. which anomaly detector)."
    )
