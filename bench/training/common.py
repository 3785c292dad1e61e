"""Shared pieces of the training benchmarks: a synthetic table, a file store, one job run."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cairn.contracts.events import TrainingJobRequested
from cairn.store.local import LocalObjectStore

from services.trainer.algorithms import TrainingContext
from services.trainer.config import TrainerSettings
from services.trainer.domain import JobResult
from services.trainer.execution import run_job
from services.trainer.scale import scale_out_for


def table(
    rows: int, features: int, seed: int = 0
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Features with a non-linear signal and noise, so more rounds keep helping a while."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    signal = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] - 0.3 * np.abs(x[:, 3]) + 0.2 * x[:, 4:10].sum(1)
    y = (signal + rng.normal(scale=1.0, size=rows) > 0).astype(np.int64)
    return x, y


def parquet_bytes(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> bytes:
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame.insert(0, "label", y)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, row_group_size=65_536)
    return buffer.getvalue()


def store_at(root: Path) -> LocalObjectStore:
    root.mkdir(parents=True, exist_ok=True)
    return LocalObjectStore(root)


def job(name: str, fields: dict[str, Any]) -> TrainingJobRequested:
    return TrainingJobRequested.model_validate({"job_name": name, "algorithm": "xgboost"} | fields)


def run(
    store: LocalObjectStore,
    request: TrainingJobRequested,
    settings: TrainerSettings | None = None,
    progress: Any = None,
) -> tuple[JobResult, float]:
    """One attempt of a job through the trainer's own code path; (result, wall seconds)."""
    settings = settings or TrainerSettings()
    resumed: list[int] = []
    ctx = TrainingContext(progress=progress or (lambda i, total, metrics: None))
    scale = scale_out_for(store, settings, request, on_resume=resumed.append)
    started = time.monotonic()
    result = run_job(store, request, f"models/{request.job_name}/", ctx, None, scale)
    return result, time.monotonic() - started
