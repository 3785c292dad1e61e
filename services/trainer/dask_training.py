"""XGBoost over Dask workers (`xgboost.dask`): a LocalCluster per job, or an external scheduler.

The job's rows are split into partitions scattered over `instance_count` workers. Callbacks run
on the workers, so rank 0 sends progress and checkpoints back as Dask worker events
(`log_event` -> `Client.subscribe_topic`) and the trainer reports and stores them; a stop
request is a Dask `Event` every rank reads at the same rounds (all-reduced, so all stop together).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import xgboost
from xgboost import collective

from services.trainer.algorithms import TrainingContext
from services.trainer.algorithms.xgboost_algo import XGBoostHyperparameters
from services.trainer.domain import JobFailure
from services.trainer.features import TrainingData
from services.trainer.xgboost_jobs import ScaleOut

log = logging.getLogger(__name__)

STOP_POLL_S = 0.5


def _distributed() -> Any:
    """`distributed`, imported on first use (heavy) and untyped to mypy."""
    return importlib.import_module("distributed")


@contextlib.contextmanager
def dask_client(scale: ScaleOut, ctx: TrainingContext) -> Iterator[tuple[Any, list[str]]]:
    """A client and the addresses of the `instance_count` workers this job trains on."""
    distributed = _distributed()
    Client, LocalCluster = distributed.Client, distributed.LocalCluster
    wanted = scale.instance_count
    if scale.dask_scheduler:
        client = Client(scale.dask_scheduler, timeout=scale.workers_wait_s)
        try:
            workers = _enough_workers(client, wanted, scale)
            ctx.log(f"dask: scheduler {scale.dask_scheduler}, training on {len(workers)} workers")
            yield client, workers
        finally:
            client.close()
        return
    threads = max(1, (os.cpu_count() or 1) // wanted)
    ctx.log(f"dask: LocalCluster of {wanted} worker processes x {threads} thread(s)")
    with (
        LocalCluster(
            n_workers=wanted,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, _enough_workers(client, wanted, scale)


def _enough_workers(client: Any, wanted: int, scale: ScaleOut) -> list[str]:
    try:
        client.wait_for_workers(wanted, timeout=scale.workers_wait_s)
    except TimeoutError:
        have = len(client.scheduler_info()["workers"])
        raise JobFailure(
            "insufficient_capacity",
            f"resources.instance_count={wanted}: the Dask cluster "
            f"({scale.dask_scheduler or 'local'}) has {have} worker(s) after "
            f"{scale.workers_wait_s:.0f}s",
        ) from None
    return sorted(client.scheduler_info()["workers"])[:wanted]


def _scattered(client: Any, array: np.ndarray[Any, Any], workers: list[str], parts: int) -> Any:
    """A dask array whose partitions live on `workers`, round-robin (no copy via the graph)."""
    da: Any = importlib.import_module("dask.array")
    rows = math.ceil(len(array) / parts)
    pieces = [array[i : i + rows] for i in range(0, len(array), rows)]
    futures = [
        client.scatter(piece, workers=[workers[index % len(workers)]], direct=True)
        for index, piece in enumerate(pieces)
    ]
    blocks = [
        da.from_delayed(future, shape=piece.shape, dtype=piece.dtype)
        for future, piece in zip(futures, pieces, strict=True)
    ]
    return da.concatenate(blocks, axis=0)


class WorkerReporter(xgboost.callback.TrainingCallback):
    """Runs on every Dask worker; rank 0 reports, every rank agrees on stopping."""

    def __init__(
        self, topic: str, stop_name: str, total: int, every: int, interval: int, start: int
    ) -> None:
        super().__init__()
        self.topic, self.stop_name = topic, stop_name
        self.total, self.every, self.interval, self.start = total, every, interval, start

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        distributed = _distributed()
        done = self.start + epoch + 1
        rank0 = collective.get_rank() == 0
        message: dict[str, Any] = {}
        if rank0 and (done % self.every == 0 or done == self.total):
            message["metrics"] = {
                f"{data}:{metric}": float(values[-1])
                for data, by_metric in evals_log.items()
                for metric, values in by_metric.items()
            }
        if rank0 and self.interval and done % self.interval == 0:
            message["checkpoint"] = bytes(model.save_raw("ubj"))
        if message:
            distributed.get_worker().log_event(self.topic, {"round": done, **message})
        if done % self.every != 0:
            return False
        stop = 1.0 if distributed.Event(self.stop_name).is_set() else 0.0
        agreed = collective.allreduce(np.array([stop]), collective.Op.MAX)
        return bool(agreed[0] > 0)


def train_on_dask(
    data: TrainingData,
    params: dict[str, Any],
    hp: XGBoostHyperparameters,
    ctx: TrainingContext,
    scale: ScaleOut,
    start: int,
    model: bytearray | None,
) -> xgboost.Booster:
    """Train over the job's Dask workers; progress and checkpoints arrive through the client."""
    from xgboost import dask as dxgb

    Event = _distributed().Event

    job_tag = uuid.uuid4().hex[:12]
    topic, stop_name = f"cairn-xgb-{job_tag}", f"cairn-xgb-stop-{job_tag}"
    received: queue.Queue[dict[str, Any] | None] = queue.Queue()
    with dask_client(scale, ctx) as (client, workers):
        parts = 2 * len(workers)
        x = _scattered(client, data.x_train, workers, parts)
        y = _scattered(client, np.asarray(data.y_train), workers, parts)
        common = {
            "feature_names": data.feature_names,
            "feature_types": data.feature_types,
            "enable_categorical": data.has_categories,
        }
        dtrain = dxgb.DaskQuantileDMatrix(client, x, y, max_bin=hp.max_bin, **common)
        evals: list[tuple[Any, str]] = [(dtrain, "train")]
        if data.x_validation is not None:
            xv = _scattered(client, data.x_validation, workers, parts)
            yv = _scattered(client, np.asarray(data.y_validation), workers, parts)
            evals.append((dxgb.DaskDMatrix(client, xv, yv, **common), "validation"))
        stop = Event(stop_name, client=client)
        client.subscribe_topic(topic, lambda event: received.put(event[1]))
        relay = threading.Thread(target=_relay, args=(received, ctx, scale, hp.num_round))
        watcher = threading.Thread(target=_watch_stop, args=(ctx, stop), daemon=True)
        relay.start()
        watcher.start()
        interval = scale.checkpoints.interval_rounds if scale.checkpoints else 0
        reporter = WorkerReporter(
            topic, stop_name, hp.num_round, hp.progress_every, interval, start
        )
        ctx.log(f"xgboost.dask {xgboost.__version__} on {len(workers)} workers: {params}")
        try:
            output = dxgb.train(
                client,
                params,
                dtrain,
                num_boost_round=max(0, hp.num_round - start),
                evals=evals,
                early_stopping_rounds=hp.early_stopping_rounds,
                callbacks=[reporter],
                verbose_eval=False,
                xgb_model=xgboost.Booster(model_file=model) if model is not None else None,
            )
        finally:
            received.put(None)
            relay.join(timeout=30)
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)
            if not stop.is_set():
                stop.set()  # ends the watcher
            watcher.join(timeout=10)
    booster: xgboost.Booster = output["booster"]
    _final_progress(ctx, output.get("history") or {}, booster.num_boosted_rounds(), hp.num_round)
    return booster


def _relay(
    received: queue.Queue[dict[str, Any] | None], ctx: TrainingContext, scale: ScaleOut, total: int
) -> None:
    """Report progress and store checkpoints the workers sent, until the job ends."""
    while (message := received.get()) is not None:
        done = int(message["round"])
        if "checkpoint" in message and scale.checkpoints is not None:
            try:
                scale.checkpoints.save_booster(done, message["checkpoint"])
            except Exception as error:  # the next checkpoint tries again
                log.warning("checkpoint of round %d failed: %r", done, error)
        if "metrics" in message:
            ctx.progress(done, total, message["metrics"])


def _watch_stop(ctx: TrainingContext, stop: Any) -> None:
    """Set the cluster-wide stop event once the job is asked to stop (or ends)."""
    try:
        while not stop.is_set():
            if ctx.should_stop():
                stop.set()
                return
            stop.wait(timeout=STOP_POLL_S)
    except Exception as error:  # the cluster went away: training has ended either way
        log.debug("stop watcher ended: %r", error)


def _final_progress(ctx: TrainingContext, history: dict[str, Any], done: int, total: int) -> None:
    """The last round's metrics from the returned history (worker events may still be in flight)."""
    metrics = {
        f"{data}:{metric}": float(values[-1])
        for data, by_metric in history.items()
        for metric, values in by_metric.items()
        if values
    }
    ctx.progress(done, total, metrics)
