"""Inference pipeline overhead per step: one XGBoost model alone, then behind 1..4 preprocessors.

Each preprocessor is a scikit-learn StandardScaler packaged like any model; the chain is the
gateway's `PipelineModel`, the object its batcher calls. Timed in process on one row and on a
64-row batch, so the figure is what a step adds to a request (parsing and HTTP are the same for
every variant). Reported, never asserted. Usage: python bench/gateway/pipeline.py [REPEATS]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
from cairn.artifacts import LoadedModel, load_model
from cairn.store import InMemoryObjectStore

from services.gateway.pipeline import PipelineModel
from tests.unit.test_gateway_payloads import ROWS
from tests.unit.test_gateway_pipeline import make_chain


def _median_us(model: LoadedModel, matrix: np.ndarray, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(matrix)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def main(repeats: int) -> dict[str, object]:
    store = InMemoryObjectStore()
    preprocessor_uri, classifier_uri = make_chain(store)
    classifier = load_model(store, classifier_uri)
    scaler = load_model(store, preprocessor_uri)
    one_row = scaler.encode_rows(ROWS[:1])
    batch = np.repeat(scaler.encode_rows(ROWS), 22, axis=0)[:64]
    report: dict[str, object] = {"repeats": repeats}
    for name, matrix in (("1_row", one_row), ("64_rows", batch)):
        scaled = scaler.predict(matrix).astype(np.float32)
        alone = _median_us(classifier, scaled, repeats)
        chains = {}
        for preprocessors in range(1, 5):
            # Further scalers take the scaled columns: same width, same work (predict checks
            # the width; names are the deployer's check).
            chain = PipelineModel([*[scaler] * preprocessors, classifier])
            chains[preprocessors + 1] = _median_us(chain, matrix, repeats)
        per_step = [(chains[n] - alone) / (n - 1) for n in chains]
        report[name] = {
            "single_model_us": round(alone, 1),
            "chain_us_by_steps": {n: round(v, 1) for n, v in chains.items()},
            "overhead_per_added_step_us": round(statistics.median(per_step), 1),
        }
    return report


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
