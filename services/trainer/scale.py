"""How one job trains beyond a single in-memory process, from its request and this trainer."""

from __future__ import annotations

from collections.abc import Callable

from cairn.contracts.events import TrainingJobRequested
from cairn.store.base import ObjectStore

from services.trainer.checkpoints import Checkpoints
from services.trainer.config import TrainerSettings
from services.trainer.requests import checkpoint_prefix
from services.trainer.xgboost_jobs import ScaleOut


def scale_out_for(
    store: ObjectStore,
    settings: TrainerSettings,
    request: TrainingJobRequested,
    on_resume: Callable[[int], None],
) -> ScaleOut:
    prefix = checkpoint_prefix(request, store)
    config = request.checkpoint_config
    checkpoints = (
        Checkpoints(store, prefix, config.interval_rounds)
        if prefix is not None and config is not None
        else None
    )
    return ScaleOut(
        instance_count=request.resources.instance_count,
        checkpoints=checkpoints,
        on_resume=on_resume,
        dask_scheduler=settings.dask_scheduler,
        workers_wait_s=settings.dask_workers_wait_s,
        pipe_chunk_bytes=settings.pipe_chunk_bytes,
        pipe_batch_rows=settings.pipe_batch_rows,
        scratch_dir=settings.scratch_dir,
        checkpoint_sync_s=settings.checkpoint_sync_s,
    )
