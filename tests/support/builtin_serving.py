"""Train a built-in in-process and score it the way the gateway and batch transform do."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any, cast

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
from cairn.contracts.batch_events import TransformJobRequested
from cairn.inference import encode_table, format_response, media_type, parse_body
from cairn.store import InMemoryObjectStore, ObjectStore

from services.batch.config import BatchSettings
from services.batch.domain import TransformJob
from services.batch.inputs import list_inputs
from services.batch.planning import TransformManifest, assemble, plan_shards
from services.batch.validation import checked
from services.batch.worker import ShardWorker
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
    return load_model(*packaged(name, data, trained))


def packaged(name: str, data: TrainingData, trained: TrainedModel) -> tuple[ObjectStore, str]:
    """The package written as a job writes it: its store and URI."""
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
    return store, write_model_package(store, f"models/{name}/", manifest, trained.files)


def answer_document(model: LoadedModel, body: Any, content_type: str = "application/json") -> Any:
    """The gateway's invocations path: parse the body, predict, answer in SageMaker's JSON
    shape for the algorithm (`{"predictions": [...]}`, RCF's `{"scores": [...]}`, a bare list)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    matrix = parse_body(model, media_type(content_type), raw)
    answer, _ = format_response(
        model.predict(matrix),
        model.output_names,
        "application/json",
        envelope=model.response_envelope,
    )
    return json.loads(answer)


def invoke(model: LoadedModel, body: Any, content_type: str = "application/json") -> Any:
    """The answer records of `answer_document`, whatever their envelope."""
    document = answer_document(model, body, content_type)
    return document if model.response_envelope is None else document[model.response_envelope]


_JOBS = itertools.count()


def batch_transform(
    store: ObjectStore,
    model_uri: str,
    inputs: dict[str, bytes],
    content_type: str,
    accept: str | None = None,
    environment: dict[str, str] | None = None,
) -> dict[str, bytes]:
    """A transform job through batch's own code: the request checks, the shard plan, the shard
    worker (the model loaded as a worker loads it) and the assembly; the bus is left out.
    Returns each output object (`<input>.out`) by input name, and `errors` lines if any."""
    job_name = f"builtin-batch-{next(_JOBS)}"
    data_source = f"data/{job_name}/"
    for name, data in inputs.items():
        store.put_bytes(data_source + name, data)
    request = TransformJobRequested(
        job_name=job_name,
        model_package_group="g",
        model_version=1,
        transform_input={"data_source": data_source, "content_type": content_type},
        transform_output={"output_path": f"outputs/{job_name}/", "accept": accept},
        environment=environment or {},
    )
    plan = checked(request, store)
    files = list_inputs(store, plan.input_location, plan.output_prefix)
    shards = plan_shards(store, request.job_name, plan, files, 1 << 20)
    job = TransformJob(
        job_name=request.job_name,
        request=request,
        request_sha256="",
        model_uri=model_uri,
        input_files=files,
        shards_total=len(shards),
    )
    with tempfile.TemporaryDirectory(prefix="cairn-test-batch-") as folder:
        settings = BatchSettings(cache_dir=Path(folder), predict_threads=1)
        worker = ShardWorker(store, settings, cast(Any, None), cast(Any, None))
        for shard in shards:
            job.done[str(shard.index)] = worker._transform(job, shard)
    manifest = TransformManifest.model_validate_json(
        store.get_bytes(assemble(store, job, plan, shards))
    )
    outputs = {e.input[len(data_source) :]: store.get_bytes(e.output) for e in manifest.outputs}
    errors = [store.get_bytes(key) for entry in manifest.outputs for key in entry.errors]
    if errors:
        outputs["errors"] = b"".join(errors)
    return outputs


def batch_predict(model: LoadedModel, frame: pd.DataFrame) -> np.ndarray:
    """Batch transform's path: an Arrow table (Parquet / CSV block) by column name."""
    return np.asarray(model.predict(encode_table(model, pa.Table.from_pandas(frame), by_name=True)))
