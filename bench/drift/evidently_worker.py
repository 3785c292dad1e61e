"""Runs inside bench/.venv-evidently: Evidently's DataDriftPreset (defaults) on saved datasets.

Usage: python evidently_worker.py JOBS.json OUT.json, where JOBS lists {"name", "npz"} items and
each .npz holds `reference` and `current` matrices. Writes per job: seconds, per-column drift
decisions and Evidently's dataset-level verdict (drifted share >= drift_share 0.5).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset


def run(npz_path: str) -> dict[str, object]:
    arrays = np.load(npz_path)
    columns = [f"f{i}" for i in range(arrays["reference"].shape[1])]
    reference = pd.DataFrame(arrays["reference"], columns=columns)
    current = pd.DataFrame(arrays["current"], columns=columns)
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(current, reference)
    seconds = time.perf_counter() - started
    drifted: list[str] = []
    dataset_drift = False
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            dataset_drift = metric["value"]["share"] >= config["drift_share"]
        elif config["type"].endswith("ValueDrift"):
            value, threshold = float(metric["value"]), float(config["threshold"])
            is_p_value = "p_value" in config["method"]
            if (value < threshold) if is_p_value else (value >= threshold):
                drifted.append(config["column"])
    return {"seconds": seconds, "drifted": drifted, "dataset_drift": dataset_drift}


def main() -> None:
    with open(sys.argv[1]) as handle:
        jobs = json.load(handle)
    results = {job["name"]: run(job["npz"]) for job in jobs}
    with open(sys.argv[2], "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
