"""Pipe mode trains on a Parquet dataset ~3x larger than the worker's memory limit; File can't.

The dataset (float64 features, so its Parquet size is close to its in-memory size) is written to a
local store in row groups. Each run is a child process whose heap is capped with RLIMIT_DATA (what
`ulimit -d` sets; it counts malloc and anonymous mappings, the memory a DataFrame lives in) before
anything is imported, then runs the trainer's own `run_job` in File or Pipe mode.

    .venv/bin/python -m bench.training.pipe_memory [--limit-mib 1536] [--ratio 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Wide rows: XGBoost keeps ~30 bytes of state per row (labels, gradients, predictions, row
# indices) in memory even with external memory, so the data that can exceed memory is the width.
FEATURES = 100


def write_dataset(root: Path, target_bytes: int) -> dict[str, float]:
    """Row groups of 50k rows until the file reaches `target_bytes`; never all in memory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / "data" / "big" / "train.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = 0
    schema = pa.schema([("label", pa.int64())] + [(f"f{i}", pa.float64()) for i in range(FEATURES)])
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        while not path.exists() or path.stat().st_size < target_bytes:
            x = rng.normal(size=(50_000, FEATURES))
            label = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(size=len(x)) > 0).astype(
                "int64"
            )
            columns = [pa.array(label)] + [pa.array(x[:, i]) for i in range(FEATURES)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            rows += len(x)
    return {"rows": rows, "parquet_mib": round(path.stat().st_size / 2**20, 1)}


def child(root: str, mode: str, limit_mib: int) -> None:
    limit = limit_mib * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    from bench.training.common import job, run, store_at

    request = job(
        f"mem-{mode.lower()}",
        {
            "hyperparameters": {"num_round": 5, "max_depth": 6},
            "input_channels": [
                {
                    "name": "train",
                    "uri": "data/big/train.parquet",
                    "content_type": "application/x-parquet",
                }
            ],
            "input_mode": mode,
        },
    )
    started = time.monotonic()
    try:
        result, _ = run(store_at(Path(root)), request)
        outcome = {"ok": True, "metrics": result.metrics}
    except BaseException as error:  # MemoryError, or a JobFailure wrapping one
        import traceback

        traceback.print_exc()
        outcome = {"ok": False, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": mode,
                "wall_s": round(time.monotonic() - started, 1),
                "peak_rss_mib": round(peak_mib, 1),
                **outcome,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit-mib", type=int, default=1536)
    parser.add_argument("--ratio", type=float, default=3.0)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    root = Path(tempfile.mkdtemp(prefix="cairn-bench-pipe-"))
    dataset = write_dataset(root, int(args.limit_mib * args.ratio * 2**20))
    print(json.dumps({"limit_mib": args.limit_mib, **dataset}), flush=True)
    # The same for both modes: fewer malloc arenas (each thread's arena is heap the limit counts)
    # and Arrow on the system allocator (its own pools keep freed memory).
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}
    for mode in ("File", "Pipe"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.training.pipe_memory",
                "--child",
                str(root),
                mode,
                str(args.limit_mib),
            ],
            check=False,
            env=env,
        )


if __name__ == "__main__":
    main()
