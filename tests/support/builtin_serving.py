"""Train a built-in in-process and score it the way the gateway and batch transform do."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from cairn.artifacts import (
    Lineage,
    LoadedModel,
    ModelManifest,
    Signature,
    load_model,
    write_model_package,
)
from cairn.inference import encode_table, format_response, media_type, parse_body
from cairn.store import InMemoryObjectStore

from services.trainer.algorithms import ALGORITHMS, TrainedModel, TrainingContext
from services.trainer.features import TrainingData


def train(
    name: str,
    hyperparameters: dict[str, Any],
    train_frame: pd.DataFrame,
    validation_frame: pd.DataFrame | None = None,
    label_column: str | None = None,
    ctx: TrainingContext | None = None,
) -> tuple[TrainingData, TrainedModel]:
    """What a training job does between reading its channels and writing its package."""
    algorithm = ALGORITHMS[name]
    parsed = algorithm.parse(hyperparameters)
    data = algorithm.prepare(
        train_frame, validation_frame, label_column=label_column, hyperparameters=parsed
    )
    return data, algorithm.train(data, parsed, ctx or TrainingContext())


def package(name: str, data: TrainingData, trained: TrainedModel) -> LoadedModel:
    """Write the package as a job does, then load it as the gateway does (sha256 verified)."""
    store = InMemoryObjectStore()
    manifest = ModelManifest(
        framework=trained.framework,
        framework_version=trained.framework_version,
        algorithm=name,
        task=trained.task,
        signature=Signature(inputs=data.inputs, outputs=trained.outputs),
        label_column=data.label_column,
        class_labels=data.class_labels,
        metrics=trained.metrics,
        lineage=Lineage(algorithm=name),
        device=trained.device,
        details=trained.details,
    )
    uri = write_model_package(store, f"models/{name}/", manifest, trained.files)
    return load_model(store, uri)


def invoke(model: LoadedModel, body: Any, content_type: str = "application/json") -> Any:
    """The gateway's invocations path: parse the body, predict, answer in JSON."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    matrix = parse_body(model, media_type(content_type), raw)
    answer, _ = format_response(model.predict(matrix), model.output_names, "application/json")
    return json.loads(answer)["predictions"]


def batch_predict(model: LoadedModel, frame: pd.DataFrame) -> np.ndarray:
    """Batch transform's path: an Arrow table (Parquet / CSV block) by column name."""
    return np.asarray(model.predict(encode_table(model, pa.Table.from_pandas(frame), by_name=True)))
