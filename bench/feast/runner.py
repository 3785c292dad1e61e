"""Run the Feast anchors from Cairn's venv: Feast lives in its own venv, bench/.venv-feast.

Feast 0.67 pins libraries Cairn does not (and needs pandas<3), so it never enters Cairn's
environment: `ensure_venv` creates bench/.venv-feast with `python3 -m venv` and installs
bench/feast/requirements.txt from PyPI once; the scripts next to this file run in it as
subprocesses and talk back through Parquet files and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".venv-feast"
REQUIREMENTS = HERE / "requirements.txt"
PYTHON = VENV / "bin" / "python"


def ensure_venv() -> Path:
    """The Feast venv's python, creating the venv and installing Feast on first use."""
    marker = VENV / ".requirements-installed"
    if marker.exists() and marker.read_text() == REQUIREMENTS.read_text():
        return PYTHON
    if not PYTHON.exists():
        print(f"creating {VENV} ...", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    print(f"installing {REQUIREMENTS.name} into {VENV} (once) ...", file=sys.stderr)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        check=True,
    )
    marker.write_text(REQUIREMENTS.read_text())
    return PYTHON


def _run(script: str, *args: str) -> dict[str, Any]:
    """Run a script of this folder in the Feast venv; its last stdout line is a JSON report."""
    python = ensure_venv()
    # Cairn's venv must not leak into Feast's interpreter.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONWARNINGS"] = "ignore"
    done = subprocess.run(
        [str(python), str(HERE / script), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def write_pit_inputs(data_dir: Path, entity: pa.Table, groups: dict[str, pa.Table]) -> None:
    """The join's inputs as Feast reads them: entity rows with `_row`, one file per group."""
    (data_dir / "groups").mkdir(parents=True, exist_ok=True)
    rows = pa.array(range(entity.num_rows), pa.int64())
    feast_entity = entity.rename_columns(
        ["event_timestamp" if name == "ts" else name for name in entity.column_names]
    ).append_column("_row", rows)
    pq.write_table(feast_entity, data_dir / "entity.parquet")
    for name, table in groups.items():
        pq.write_table(table, data_dir / "groups" / f"{name}.parquet")


def run_pit(data_dir: Path) -> tuple[dict[str, Any], pa.Table]:
    """Feast's get_historical_features over `data_dir`: its report and result (by `_row`)."""
    out = data_dir / "feast-result.parquet"
    report = _run("feast_pit.py", str(data_dir), str(out))
    return report, pq.read_table(out)


def run_online(records: int, gets: int, seed: int) -> dict[str, Any]:
    """Feast's sqlite online store, in-process get_online_features latency (µs percentiles)."""
    options = ["--records", str(records), "--gets", str(gets), "--seed", str(seed)]
    return _run("feast_online.py", *options)


def main() -> None:
    """`python bench/feast/runner.py online`: print Feast's sqlite online-store latency."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("anchor", choices=["online"])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--gets", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report = run_online(args.records, args.gets, args.seed)
    print(
        f"feast sqlite online store, in-process get_online_features over {report['records']:,} "
        f"records ({report['gets']:,} gets): p50 {report['p50_us'] / 1000:.2f} ms, "
        f"p99 {report['p99_us'] / 1000:.2f} ms, max {report['max_us'] / 1000:.2f} ms "
        f"(load {report['load_s']:.1f} s)"
    )


if __name__ == "__main__":
    main()
