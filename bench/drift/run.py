"""Drift check cost per run and decision quality: Cairn's monitor vs Evidently's DataDriftPreset.

    .venv/bin/python bench/drift/run.py [--sizes 1000x20,10000x20,...] [--trials 20] [--cairn-only]

Cairn: the baseline (statistics and the sorted reference sample, up to 100k values per feature)
is computed once per model version and excluded from the per-run cost (shown apart); a run is
`DriftDetector.check` on the current batch (exact KS on the whole reference). Evidently 0.7 runs
with its defaults from its own virtualenv (bench/.venv-evidently, created here; it needs
pandas<3), on the same reference and current data. Decision quality on 1k-row batches x 20
features: datasets where 10% of the features shift by 0.3 standard deviations (is the dataset
flagged? Evidently's rule: drifted share >= 0.5), and the per-feature false-alarm rate when nothing
drifts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cairn.artifacts.manifest import InputColumn

from services.monitor.baseline import compute_baseline, reference_sample
from services.monitor.config import MonitorSettings
from services.monitor.drift import DriftDetector

HERE = Path(__file__).resolve().parent
EVIDENTLY_VENV = HERE.parent / ".venv-evidently"
EVIDENTLY_SPEC = ["evidently>=0.7,<0.8", "pandas<3", "numpy<2"]
SHIFT_STD = 0.3
SHIFT_SHARE = 0.1


def evidently_python() -> Path:
    """The Evidently virtualenv's interpreter, creating the virtualenv on first use."""
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        (EVIDENTLY_VENV / ".gitignore").write_text("*\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", *EVIDENTLY_SPEC], check=True)
    return python


def dataset(rows: int, features: int, seed: int, shifted: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).normal(size=(rows, features))
    data[:, :shifted] += SHIFT_STD
    return data


def cairn_detector(reference: np.ndarray) -> tuple[DriftDetector, float]:
    settings = MonitorSettings()
    names = [f"f{i}" for i in range(reference.shape[1])]
    started = time.perf_counter()
    frame = pd.DataFrame(reference, columns=names)
    stats, constraints = compute_baseline(
        frame,
        [InputColumn(name=name, dtype="float") for name in names],
        group="bench",
        version=1,
        label_column=None,
        sketch_size=settings.sketch_size,
    )
    sample = reference_sample(frame, stats, max_values=settings.reference_max_values)
    detector = DriftDetector(stats, constraints, sample, p_value=0.05, correction="bonferroni")
    return detector, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000x20,1000x100,10000x20,10000x100,100000x20,100000x100"
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cairn-only", action="store_true", help="Skip Evidently (no virtualenv to create)."
    )
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
    max_rows = MonitorSettings().max_current_rows
    python = None if args.cairn_only else evidently_python()
    with tempfile.TemporaryDirectory() as tmp:
        jobs: list[dict[str, str]] = []
        cairn_cost: dict[str, tuple[float, float]] = {}
        for rows, features in sizes:
            name = f"cost-{rows}x{features}"
            reference, current = dataset(rows, features, 1), dataset(rows, features, 2)
            np.savez(f"{tmp}/{name}.npz", reference=reference, current=current)
            jobs.append({"name": name, "npz": f"{tmp}/{name}.npz"})
            detector, baseline_s = cairn_detector(reference)
            runs = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                detector.check(current, max_rows=max_rows)
                runs.append(time.perf_counter() - started)
            cairn_cost[name] = (statistics.median(runs), baseline_s)
        quality: dict[str, list[int]] = {"shift_cairn": [], "null_cairn": []}
        rows, features = 1000, 20
        shifted = int(features * SHIFT_SHARE)
        reference = dataset(rows, features, 7)
        detector, _ = cairn_detector(reference)
        for trial in range(args.trials):
            for kind, count in (("shift", shifted), ("null", 0)):
                current = dataset(rows, features, 1000 + trial, shifted=count)
                name = f"{kind}-{trial}"
                np.savez(f"{tmp}/{name}.npz", reference=reference, current=current)
                jobs.append({"name": name, "npz": f"{tmp}/{name}.npz"})
                drifted = [
                    r for r in detector.check(current, max_rows=max_rows, seed=trial) if r.drifted
                ]
                quality[f"{kind}_cairn"].append(len(drifted))
        evidently = run_evidently(python, jobs, Path(tmp)) if python else {}
    report(sizes, cairn_cost, quality, evidently, args.trials)


def run_evidently(python: Path, jobs: list[dict[str, str]], tmp: Path) -> dict[str, Any]:
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run(
        [str(python), str(HERE / "evidently_worker.py"), f"{tmp}/jobs.json", f"{tmp}/out.json"],
        check=True,
    )
    return dict(json.loads((tmp / "out.json").read_text()))


def report(
    sizes: list[tuple[int, ...]],
    cairn_cost: dict[str, tuple[float, float]],
    quality: dict[str, list[int]],
    evidently: dict[str, Any],
    trials: int,
) -> None:
    """The cost table and the decision-quality table (Evidently's columns '-' when skipped)."""

    print(
        "| rows x features | Cairn per run (s) | Cairn baseline, once (s) "
        "| Evidently (s) | speed-up |"
    )
    print("|---|---|---|---|---|")
    for rows, features in sizes:
        name = f"cost-{rows}x{features}"
        run_s, baseline_s = cairn_cost[name]
        ev_s = evidently.get(name, {}).get("seconds")
        shown = f"{ev_s:.2f} | {ev_s / run_s:.0f}x" if ev_s is not None else "- | -"
        print(f"| {rows} x {features} | {run_s:.3f} | {baseline_s:.3f} | {shown} |")
    features = 20
    cairn_shift = sum(count > 0 for count in quality["shift_cairn"])
    cairn_null = sum(quality["null_cairn"])
    ev_shift: object = "-"
    ev_null: object = "-"
    if evidently:
        flagged = sum(evidently[f"shift-{t}"]["dataset_drift"] for t in range(trials))
        ev_shift = f"{flagged}/{trials}"
        drifted = sum(len(evidently[f"null-{t}"]["drifted"]) for t in range(trials))
        ev_null = f"{drifted / (trials * features):.3f}"
    print()
    print(f"Decision quality, {trials} datasets of 1000 rows x 20 features:")
    print("| | Cairn | Evidently (defaults) |")
    print("|---|---|---|")
    print(
        f"| datasets flagged, 10% of features shifted 0.3 std | {cairn_shift}/{trials} "
        f"| {ev_shift} |"
    )
    print(
        f"| false alarms per feature, no drift | {cairn_null / (trials * features):.3f} | "
        f"{ev_null} |"
    )


if __name__ == "__main__":
    main()
