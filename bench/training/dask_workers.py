"""1 vs 2 Dask workers on one machine, and the same job on an external `dask scheduler`.

The trainer's own code path (`train_file_mode` / `train_on_dask`) on a ROWS x 50 float table,
50 rounds of depth-6 hist; the data is already in memory (reading the channel is the same for
all), and wall time covers cluster start, scattering the partitions, training and scoring.

    .venv/bin/python -m bench.training.dask_workers [--rows 2000000] [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from cairn.artifacts import InputColumn

from bench.training.common import table
from services.trainer.algorithms import TrainingContext
from services.trainer.algorithms.xgboost_algo import XGBoostHyperparameters, _params
from services.trainer.dask_training import train_on_dask
from services.trainer.features import TrainingData
from services.trainer.xgboost_jobs import ScaleOut, train_file_mode

FEATURES = 50


def data(rows: int) -> TrainingData:
    x, y = table(rows + rows // 10, FEATURES)
    return TrainingData(
        inputs=[InputColumn(name=f"f{i}", dtype="float") for i in range(FEATURES)],
        label_column="label",
        x_train=x[:rows],
        y_train=y[:rows].astype(np.float64),
        x_validation=x[rows:],
        y_validation=y[rows:].astype(np.float64),
        class_labels=["0", "1"],
    )


def timed(label: str, work: Any) -> dict[str, Any]:
    started = time.monotonic()
    trained = work()
    wall = time.monotonic() - started
    result = {"run": label, "wall_s": round(wall, 1), **trained.metrics}
    print(json.dumps(result), flush=True)
    return result


def external_cluster(workers: int) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """`dask scheduler` and `dask worker` processes, as compose or Kubernetes would run them."""
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or "dask"
    port = 8786 + os.getpid() % 1000
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--port", str(port), "--dashboard-address", ":0"],
        stderr=subprocess.DEVNULL,
    )
    address = f"tcp://127.0.0.1:{port}"
    started = [scheduler]
    for _ in range(workers):
        started.append(
            subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
                stderr=subprocess.DEVNULL,
            )
        )
    return address, started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    training = data(args.rows)
    hp = XGBoostHyperparameters(num_round=args.rounds, max_depth=6, progress_every=10)
    ctx = TrainingContext()
    results = [
        timed(
            "single process (xgboost.train)", lambda: train_file_mode(training, hp, ctx, ScaleOut())
        ),
        timed(
            "LocalCluster, 1 worker x 2 threads",
            lambda: _dask_package(training, hp, ctx, ScaleOut(instance_count=1)),
        ),
        timed(
            "LocalCluster, 2 workers x 1 thread",
            lambda: train_file_mode(training, hp, ctx, ScaleOut(instance_count=2)),
        ),
    ]
    address, processes = external_cluster(2)
    try:
        from distributed import Client

        with Client(address, timeout=120) as client:  # started before the clock, like compose
            client.wait_for_workers(2, timeout=120)
        scale = ScaleOut(instance_count=2, dask_scheduler=address, workers_wait_s=120)
        results.append(
            timed(
                "external dask scheduler, 2 workers x 1 thread",
                lambda: train_file_mode(training, hp, ctx, scale),
            )
        )
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait()
    print(
        json.dumps(
            {"rows": args.rows, "features": FEATURES, "rounds": args.rounds, "results": results},
            indent=2,
        )
    )


def _dask_package(
    training: TrainingData, hp: XGBoostHyperparameters, ctx: TrainingContext, scale: ScaleOut
) -> Any:
    """One Dask worker: `train_file_mode` trains in-process for instance_count 1, so call Dask."""
    from services.trainer.algorithms.xgboost_algo import _metrics
    from services.trainer.xgboost_jobs import packaged

    booster = train_on_dask(training, _params(hp, "cpu", 2), hp, ctx, scale, 0, None)
    return packaged(
        booster,
        hp,
        training.class_labels,
        _metrics(booster, training, hp.objective, 2),
        "cpu",
        scale,
    )


if __name__ == "__main__":
    main()
