"""Spot-style kills: a 400-round job killed at ~70% five times, with and without checkpoints.

Each trial starts the job in a child process (the trainer's own `run_job`), kills it with SIGKILL
once its progress passes round 280, then runs the job again to the end, as the next worker would.
It reports the rounds the second attempt trained again and compares the final model with an
uninterrupted run (validation AUC and logloss, and the largest prediction difference).

    .venv/bin/python -m bench.training.checkpoints [--rows 50000] [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from cairn.artifacts import load_model

from bench.training.common import job, parquet_bytes, run, store_at, table

ROUNDS = 400
KILL_AT = 280
INTERVAL = 10


def fields(checkpoint: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hyperparameters": {"num_round": ROUNDS, "max_depth": 6, "eta": 0.05, "progress_every": 1},
        "input_channels": [
            {
                "name": "train",
                "uri": "data/b/train.parquet",
                "content_type": "application/x-parquet",
            },
            {
                "name": "validation",
                "uri": "data/b/valid.parquet",
                "content_type": "application/x-parquet",
            },
        ],
    }
    if checkpoint:
        body["checkpoint_config"] = {"uri": checkpoint, "interval_rounds": INTERVAL}
    return body


def child(root: str, name: str, checkpoint: str | None) -> None:
    """One attempt; prints each round so the parent can kill it at the round it wants."""

    def progress(i: int, total: int | None, metrics: dict[str, float]) -> None:
        print(f"round {i}", flush=True)

    run(store_at(Path(root)), job(name, fields(checkpoint)), progress=progress)
    print("done", flush=True)


def killed_attempt(root: Path, name: str, checkpoint: str | None) -> int:
    """Start the job, SIGKILL it once it reports round >= KILL_AT; the round it had reached."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.training.checkpoints",
            "--child",
            str(root),
            name,
            checkpoint or "",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    reached = 0
    for line in process.stdout:
        if line.startswith("round "):
            reached = int(line.split()[1])
            if reached >= KILL_AT:
                os.kill(process.pid, signal.SIGKILL)
                break
    process.wait()
    return reached


def trial(root: Path, index: int, checkpointed: bool) -> dict[str, Any]:
    store = store_at(root)
    name = f"{'ckpt' if checkpointed else 'none'}-{index}"
    checkpoint = f"outputs/ckpt/{name}" if checkpointed else None
    reached = killed_attempt(root, name, checkpoint)
    resumed_from = 0
    rounds: list[int] = []
    result, wall = run(
        store, job(name, fields(checkpoint)), progress=lambda i, t, m: rounds.append(i)
    )
    resumed_from = int(result.details.get("resumed_from_round", 0))
    return {
        "killed_at_round": reached,
        "resumed_from_round": resumed_from,
        "rounds_redone": reached - resumed_from,
        "second_attempt_s": round(wall, 1),
        "metrics": result.metrics,
        "artifact_uri": result.artifact_uri,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2] or None)
        return
    root = Path(tempfile.mkdtemp(prefix="cairn-bench-ckpt-"))
    store = store_at(root)
    x, y = table(args.rows + args.rows // 5, args.features)
    store.put_bytes("data/b/train.parquet", parquet_bytes(x[: args.rows], y[: args.rows]))
    store.put_bytes("data/b/valid.parquet", parquet_bytes(x[args.rows :], y[args.rows :]))
    baseline, baseline_s = run(store, job("uninterrupted", fields(None)))
    reference = load_model(store, baseline.artifact_uri)
    rows = x[args.rows :][:2000].tolist()
    expected = reference.predict(reference.encode_rows(rows))
    report: dict[str, Any] = {
        "rows": args.rows,
        "features": args.features,
        "rounds": ROUNDS,
        "kill_at": KILL_AT,
        "interval": INTERVAL,
        "uninterrupted": {"wall_s": round(baseline_s, 1), "metrics": baseline.metrics},
    }
    for checkpointed in (True, False):
        trials = [trial(root, i, checkpointed) for i in range(args.trials)]
        for one in trials:
            model = load_model(store, one.pop("artifact_uri"))
            got = model.predict(model.encode_rows(rows))
            one["max_prediction_diff_vs_uninterrupted"] = float(np.max(np.abs(got - expected)))
        report["with_checkpoints" if checkpointed else "without_checkpoints"] = {
            "trials": trials,
            "rounds_redone": [t["rounds_redone"] for t in trials],
            "mean_rounds_redone": sum(t["rounds_redone"] for t in trials) / len(trials),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"total {time.monotonic() - started:.0f}s", file=sys.stderr)
