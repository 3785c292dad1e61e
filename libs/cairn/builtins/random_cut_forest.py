"""Random Cut Forest: SageMaker's anomaly score, the collusive displacement (CoDisp) of a point.

Each tree is a robust random cut tree (Guha et al., 2016) over a sample of the train rows, built
with the `rrcf` library. A point's score is its CoDisp averaged over the trees: insert it, ask
how many points its removal would displace, take it out again. High = anomalous. The trees
are stored as rrcf's own nested-dict JSON, never pickled.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from cairn.artifacts.manifest import ModelManifest
from cairn.artifacts.package import LoadedModel, UnsupportedModelPackage

FOREST_FILE = "forest.json"
_QUERY = "__cairn_query__"


def fill_missing(rows: npt.NDArray[Any], medians: list[float]) -> npt.NDArray[np.float64]:
    """NaN cells take the train channel's median of their column (as SageMaker's imputation)."""
    matrix = np.array(rows, dtype=np.float64)
    missing = np.isnan(matrix)
    if missing.any():
        matrix[missing] = np.take(np.asarray(medians, dtype=np.float64), np.where(missing)[1])
    return matrix


def codisp(trees: list[Any], point: npt.NDArray[np.float64]) -> float:
    """The point's collusive displacement averaged over the trees (trees are left unchanged).

    Inserting draws a random cut; seeding it from the point makes a score repeatable.
    """
    total = 0.0
    seed = zlib.crc32(np.ascontiguousarray(point, dtype=np.float64).tobytes())
    for number, tree in enumerate(trees):
        tree.rng = np.random.RandomState((seed + number) % 2**32)
        tree.insert_point(point, index=_QUERY)
        try:
            total += float(tree.codisp(_QUERY))
        finally:
            tree.forget_point(_QUERY)
    return total / len(trees)


def forest_json(trees: list[Any], medians: list[float]) -> bytes:
    return json.dumps({"trees": [tree.to_dict() for tree in trees], "medians": medians}).encode()


def load_trees(data: bytes) -> tuple[list[Any], list[float]]:
    import rrcf

    try:
        document = json.loads(data)
        trees = []
        for obj in document["trees"]:
            tree = rrcf.RCTree()
            tree.load_dict(obj)
            trees.append(tree)
        medians = [float(m) for m in document["medians"]]
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise UnsupportedModelPackage(f"{FOREST_FILE} is not a forest: {error!r}") from None
    if not trees:
        raise UnsupportedModelPackage(f"{FOREST_FILE} holds no trees")
    return trees, medians


class RandomCutForestModel(LoadedModel):
    """Scores rows by CoDisp; one lock, as scoring inserts into and forgets from the trees."""

    response_envelope = "scores"  # SageMaker RCF: {"scores": [{"score": 0.02}, ...]}

    def __init__(self, manifest: ModelManifest, blobs: Mapping[str, bytes]) -> None:
        super().__init__(manifest)
        if FOREST_FILE not in blobs:
            raise UnsupportedModelPackage(f"rrcf package has no {FOREST_FILE}")
        self.trees, self.medians = load_trees(blobs[FOREST_FILE])
        self._lock = threading.Lock()

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        rows = fill_missing(self._check_width(matrix), self.medians)
        with self._lock:
            return np.array([codisp(self.trees, row) for row in rows], dtype=np.float64)
