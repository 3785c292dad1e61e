"""Inference pipeline overhead per step: one XGBoost model alone, then behind 1..4 preprocessors.

Each preprocessor is a scikit-learn StandardScaler packaged like any model; the chain is the
gateway's `PipelineModel`, the object its batcher calls. Timed in process on one row and on a
64-row batch, so the figure is what a step adds to a request (parsing and HTTP are the same for
every variant). Reported, never asserted. Usage: python bench/gateway/pipeline.py [REPEATS]

Two inference-graph rows (`services/gateway/graph.py`, the inline path a lone request takes):
a Switch between two XGBoost models whose condition (`age < 200`) holds for every row, against
the model it picks alone (the condition, the row split and the reassembly are its overhead), and
a mean Ensemble of both, against the two models called one after the other. XGBoost's own
per-call cost varies with the machine's load far more than the graph costs, so the same two
graphs are also timed over a stand-in model that only slices its input (`graph_machinery`):
that figure is the routing alone.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from cairn.artifacts import LoadedModel, load_model
from cairn.contracts.graph import InferenceGraph
from cairn.store import InMemoryObjectStore

from services.gateway.batching import MicroBatcher
from services.gateway.graph import GraphModel
from services.gateway.pipeline import PipelineModel
from tests.unit.test_gateway_payloads import ROWS, make_package
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
    report["graph"] = _graph_rows(store, repeats, one_row, batch)
    report["graph_machinery"] = _machinery_rows(repeats, one_row, batch)
    return report


class _StandIn(LoadedModel):
    """Answers its first column: a model whose own cost is next to nothing."""

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return matrix[:, 0] * 0.5


def _machinery_rows(repeats: int, one_row: np.ndarray, batch: np.ndarray) -> dict[str, object]:
    store = InMemoryObjectStore()
    manifest = load_model(store, make_package(store, "models/plain/")).manifest
    executor = ThreadPoolExecutor(1)
    models: dict[str, tuple[LoadedModel, MicroBatcher]] = {}
    for uri in ("a/", "b/"):
        stand_in = _StandIn(manifest)
        models[uri] = (stand_in, MicroBatcher(stand_in.predict, executor))
    first = {"model_package_group": "s", "model_version": 1, "artifact_uri": "a/"}
    second = {**first, "model_version": 2, "artifact_uri": "b/"}
    graphs = {
        "switch": {"router_type": "Switch", "steps": [{**first, "condition": "age < 200"}, second]},
        "ensemble_mean": {"router_type": "Ensemble", "combine": "mean", "steps": [first, second]},
    }
    rows: dict[str, object] = {}
    for name, matrix in (("1_row", one_row), ("64_rows", batch)):
        stand_in = models["a/"][0]
        alone = _median_us(stand_in, matrix, repeats)
        figures = {"stand_in_model_us": round(alone, 1)}
        for kind, root in graphs.items():
            graph = InferenceGraph.model_validate({"nodes": {"root": root}})
            model = GraphModel(graph, models, lambda step: str(step.artifact_uri))
            calls = 1 if kind == "switch" else 2
            figures[f"{kind}_overhead_us"] = round(
                _median_us(model, matrix, repeats) - calls * alone, 1
            )
        rows[name] = figures
    return rows


def _graph(store: InMemoryObjectStore, nodes: dict[str, Any]) -> GraphModel:
    executor = ThreadPoolExecutor(1)  # unused: inline steps predict on the caller's thread
    uris = ("models/plain/", "models/plain2/")
    models = {}
    for uri in uris:
        model = load_model(store, uri)
        models[uri] = (model, MicroBatcher(model.predict, executor))
    graph = InferenceGraph.model_validate({"nodes": nodes})
    return GraphModel(graph, models, lambda step: str(step.artifact_uri))


def _graph_rows(
    store: InMemoryObjectStore, repeats: int, one_row: np.ndarray, batch: np.ndarray
) -> dict[str, object]:
    make_package(store, "models/plain/")
    make_package(store, "models/plain2/", seed=1)
    plain = {"model_package_group": "plain", "model_version": 1, "artifact_uri": "models/plain/"}
    plain2 = {**plain, "model_version": 2, "artifact_uri": "models/plain2/"}
    switch = _graph(
        store,
        {"root": {"router_type": "Switch", "steps": [{**plain, "condition": "age < 200"}, plain2]}},
    )
    ensemble = _graph(
        store, {"root": {"router_type": "Ensemble", "combine": "mean", "steps": [plain, plain2]}}
    )
    first, second = load_model(store, "models/plain/"), load_model(store, "models/plain2/")
    rows: dict[str, object] = {}
    for name, matrix in (("1_row", one_row), ("64_rows", batch)):
        alone = _median_us(first, matrix, repeats)
        both = alone + _median_us(second, matrix, repeats)
        switched = _median_us(switch, matrix, repeats)
        combined = _median_us(ensemble, matrix, repeats)
        rows[name] = {
            "single_model_us": round(alone, 1),
            "switch_us": round(switched, 1),
            "switch_overhead_us": round(switched - alone, 1),
            "two_models_in_turn_us": round(both, 1),
            "ensemble_mean_of_2_us": round(combined, 1),
            "ensemble_overhead_us": round(combined - both, 1),
        }
    return rows


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
