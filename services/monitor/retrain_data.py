"""Data for a retrain (original + labelled capture, a holdout); challenger vs champion scores."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from cairn.artifacts import ModelManifest, load_model, package_prefix, read_manifest
from cairn.contracts.events import (
    DriftDetected,
    InputChannel,
    ModelPackageRegistered,
    RegistrationSpec,
    TrainingJobRequested,
)
from cairn.errors import InvalidInput, ObjectNotFound
from cairn.store.base import ObjectStore

from services.monitor.checks import current_batch, quality_metrics
from services.monitor.domain import RETRAIN_TRAINING_DATA, RetrainJob, RetrainPolicy
from services.monitor.handlers import Monitor
from services.monitor.runs import utc_now
from services.monitor.storage import read_table
from services.monitor.views import model_version, served_model, training_request

MIN_HOLDOUT_ROWS = 10
LABEL = "__label__"


@dataclass(frozen=True)
class RetrainContext:
    """The drifted version's training job and manifest, and the endpoint's labelled capture."""

    base_job: str
    request: TrainingJobRequested
    manifest: ModelManifest
    captured: pd.DataFrame

    @property
    def features(self) -> list[str]:
        return [column.name for column in self.manifest.signature.inputs]


@dataclass(frozen=True)
class Evaluation:
    """Both models' `metric` on the same holdout; no champion score when none can be found."""

    challenger: float
    champion: float | None
    champion_version: int | None


def labelled_capture(monitor: Monitor, endpoint: str, feature_names: list[str]) -> pd.DataFrame:
    """Every captured row of the endpoint with a ground-truth label (column `__label__`)."""
    labels = monitor.load_labels(endpoint)
    if not labels:
        return pd.DataFrame(columns=[*feature_names, LABEL])
    rows = monitor.captured_rows(endpoint, None, None, utc_now())
    batch = current_batch([row for row in rows if row.inference_key in labels], feature_names)
    frame = batch.frame.reindex(columns=feature_names)
    frame[LABEL] = [labels[key] for key in batch.inference_keys if key is not None]
    return frame


def gather(monitor: Monitor, drift: DriftDetected) -> RetrainContext:
    """The drifted version's training job, its request and data, and labelled capture."""
    group, version = drift.model_package_group, drift.model_version
    registered = model_version(monitor.store, group, version)
    if registered is None:
        raise ObjectNotFound(f"model {group} v{version} is not in the registry")
    manifest = read_manifest(monitor.store, registered.artifact_uri)
    base_job = registered.lineage.training_job or manifest.lineage.training_job
    request = training_request(monitor.store, base_job) if base_job else None
    if not base_job or request is None:
        raise ObjectNotFound(f"the training job of {group} v{version} is not stored")
    features = [column.name for column in manifest.signature.inputs]
    captured = labelled_capture(monitor, drift.endpoint_name, features)
    return RetrainContext(base_job, request, manifest, captured)


def split_holdout(
    original: pd.DataFrame,
    captured: pd.DataFrame,
    data: Literal["original+captured", "captured"],
    holdout_fraction: float,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout). The holdout comes from the labelled capture when there is enough of it:
    the champion never trained on those rows, and they are the traffic the models serve now."""
    fresh = captured.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if len(fresh) >= MIN_HOLDOUT_ROWS / holdout_fraction:
        holdout_rows = int(len(fresh) * holdout_fraction)
        holdout, fresh = fresh.iloc[:holdout_rows], fresh.iloc[holdout_rows:]
        parts = [fresh] if data == "captured" else [original, fresh]
        return pd.concat([part for part in parts if len(part)], ignore_index=True), holdout
    parts = [fresh] if data == "captured" else [original, fresh]
    everything = pd.concat([part for part in parts if len(part)], ignore_index=True)
    everything = everything.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    holdout_rows = max(1, int(len(everything) * holdout_fraction))
    return everything.iloc[holdout_rows:], everything.iloc[:holdout_rows]


def write_training_data(
    store: ObjectStore,
    drift: DriftDetected,
    policy: RetrainPolicy,
    job: RetrainJob,
    context: RetrainContext,
    holdout_fraction: float,
) -> TrainingJobRequested:
    """train.parquet + holdout.parquet for the new job, and its TrainingJobRequested."""
    original = context.request
    train_channel = next(c for c in original.input_channels if c.name == "train")
    label = context.manifest.label_column or train_channel.label_column
    if not label:
        raise InvalidInput("retraining needs a supervised model with a label column")
    original_frame = read_table(store, train_channel.uri)[[*context.features, label]]
    captured = _conform(context.captured.rename(columns={LABEL: label}), original_frame)
    train, holdout = split_holdout(
        original_frame, captured, policy.data, holdout_fraction, _seed(job.job_name)
    )
    if len(train) < MIN_HOLDOUT_ROWS:
        raise InvalidInput(f"only {len(train)} labelled rows to retrain on")
    train_key = f"{RETRAIN_TRAINING_DATA}/{job.job_name}/train.parquet"
    store.put_bytes(train_key, _parquet(train))
    store.put_bytes(job.holdout_key, _parquet(holdout))
    return retrain_request(drift, job, original, train_key, label)


def retrain_request(
    drift: DriftDetected,
    job: RetrainJob,
    original: TrainingJobRequested,
    train_key: str,
    label: str,
) -> TrainingJobRequested:
    """The original job's request, training on the new data and registering for review."""
    channel = InputChannel(
        name="train", uri=train_key, content_type="application/x-parquet", label_column=label
    )
    return TrainingJobRequested(
        job_name=job.job_name,
        algorithm=original.algorithm,
        hyperparameters=original.hyperparameters,
        input_channels=[channel, *[c for c in original.input_channels if c.name != "train"]],
        resources=original.resources,
        stopping_condition=original.stopping_condition,
        registration=RegistrationSpec(
            model_package_group=drift.model_package_group,
            approval_status="PendingManualApproval",
            description=f"retrained on drift run {drift.run_id} of {drift.endpoint_name}",
        ),
        tags={"cairn.retrain_of": job.base_training_job, "cairn.drift_run": drift.run_id},
    )


def evaluate(
    monitor: Monitor, policy: RetrainPolicy, job: RetrainJob, data: ModelPackageRegistered
) -> Evaluation:
    """The challenger and the endpoint's current model (else the drifted version) on the holdout."""
    store = monitor.store
    holdout = pq.read_table(io.BytesIO(store.get_bytes(job.holdout_key))).to_pandas()
    served = served_model(store, policy.endpoint_name)
    champion_version = served.version if served else job.base_version
    champion_uri = served.artifact_uri if served else None
    if champion_uri is None:
        registered = model_version(store, data.model_package_group, champion_version)
        champion_uri = registered.artifact_uri if registered else None
    challenger = score(store, data.artifact_uri, holdout, policy.metric)
    if champion_uri is None:
        return Evaluation(challenger, None, None)
    champion = score(store, champion_uri, holdout, policy.metric)
    return Evaluation(challenger, champion, champion_version)


def score(store: ObjectStore, artifact_uri: str, holdout: pd.DataFrame, metric: str) -> float:
    """The model's `metric` on the holdout (same rows for challenger and champion)."""
    model = load_model(store, package_prefix(artifact_uri, store))
    manifest = model.manifest
    label = manifest.label_column or holdout.columns[-1]
    inputs = holdout[model.input_names]
    records = inputs.astype(object).where(inputs.notna(), None).to_dict("records")
    predictions = model.predict(model.encode_records(records))
    values = [list(map(float, row)) if np.ndim(row) else float(row) for row in predictions]
    metrics = quality_metrics(manifest.task, manifest.class_labels, values, list(holdout[label]))
    if metric not in metrics:
        raise InvalidInput(f"metric {metric!r} cannot be computed for a {manifest.task} model")
    return metrics[metric]


def _conform(captured: pd.DataFrame, original: pd.DataFrame) -> pd.DataFrame:
    """Captured cells (CSV text) typed like the original training columns."""
    typed = captured.reindex(columns=original.columns)
    for column in original.columns:
        if pd.api.types.is_numeric_dtype(original[column]):
            typed[column] = pd.to_numeric(typed[column], errors="coerce")
        else:
            typed[column] = typed[column].map(lambda v: None if v is None else str(v))
    return typed


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def _seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
