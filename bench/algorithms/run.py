"""Three built-ins through Cairn's job path against the same library called directly.

"Cairn" is the trainer's own `run_job` on a local store: read the channel (Parquet), prepare the
signature, train, write the package with its manifest; quality is then measured on the package
loaded as the gateway loads it. "Direct" is the library in one process on the same arrays with the
same settings, as a user would call it. Times are wall seconds of one run each on this machine.

    .venv/bin/python -m bench.algorithms.run [--scale 1.0]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cairn.artifacts import load_model
from sklearn.metrics import roc_auc_score

from bench.training.common import job, run, store_at


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


class Clock:
    """Wall and CPU seconds of a block (CPU time is steadier on a shared, busy machine)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.monotonic(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.monotonic() - self.wall, time.process_time() - self.cpu

    def seconds(self) -> dict[str, float]:
        return {"wall": round(self.wall, 2), "cpu": round(self.cpu, 2)}


def through_cairn(root: Path, algorithm: str, hp: dict[str, Any], frame: pd.DataFrame) -> Any:
    """The served model of one job on a fresh local store (the job reads, trains, packages)."""
    store = store_at(root / algorithm)
    store.put_bytes(f"data/{algorithm}/train.parquet", parquet(frame))
    request = job(
        f"bench-{algorithm}",
        {
            "algorithm": algorithm,
            "hyperparameters": hp,
            "input_channels": [
                {
                    "name": "train",
                    "uri": f"data/{algorithm}/train.parquet",
                    "content_type": "application/x-parquet",
                }
            ],
        },
    )
    result, _ = run(store, request)
    return load_model(store, result.artifact_uri)


def lda(root: Path, scale: float) -> dict[str, Any]:
    from sklearn.decomposition import LatentDirichletAllocation

    rng = np.random.default_rng(0)
    topics, vocabulary, docs = 10, 500, int(4000 * scale)
    phi = rng.dirichlet(np.full(vocabulary, 0.05), size=topics)
    theta = rng.dirichlet(np.full(topics, 0.3), size=docs + 1000)
    counts = np.array([rng.multinomial(80, t @ phi) for t in theta])
    frame = pd.DataFrame(counts[:docs], columns=[f"w{i}" for i in range(vocabulary)])
    held_out = counts[docs:].astype(np.float64)
    hp = {"num_topics": topics, "max_iterations": 10, "alpha0": 3.0, "mini_batch_size": 256}
    with Clock() as cairn:
        model = through_cairn(root, "lda", hp, frame)
    estimator = model.estimator[-1]
    cairn_pwll = float(estimator.score(held_out) / held_out.sum())
    with Clock() as alone:
        direct = LatentDirichletAllocation(
            n_components=topics,
            doc_topic_prior=3.0 / topics,
            learning_method="online",
            batch_size=256,
            max_iter=10,
            random_state=0,
        ).fit(counts[:docs])
    return {
        "algorithm": "lda (scikit-learn)",
        "data": f"{docs} docs x {vocabulary} words, 10 planted topics",
        "quality": "held-out per-word log-likelihood bound (higher is better)",
        "cairn_s": cairn.seconds(),
        "direct_s": alone.seconds(),
        "cairn_quality": cairn_pwll,
        "direct_quality": float(direct.score(held_out) / held_out.sum()),
    }


def sentences(rng: np.random.Generator, rows: int) -> tuple[list[str], list[list[str]]]:
    groups = [[f"g{g}w{i}" for i in range(20)] for g in range(8)]
    texts = []
    for _ in range(rows):
        group = groups[rng.integers(len(groups))]
        texts.append(" ".join(rng.choice(group, size=10).tolist()))
    return texts, groups


def separation(vector: Any, groups: list[list[str]]) -> float:
    """Mean cosine within a planted group minus mean cosine across groups."""
    words = [word for group in groups for word in group[:5]]
    vectors = np.array([vector(word) for word in words])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    same = np.equal.outer(
        np.repeat(np.arange(len(groups)), 5), np.repeat(np.arange(len(groups)), 5)
    )
    np.fill_diagonal(same, False)
    different = ~np.equal.outer(
        np.repeat(np.arange(len(groups)), 5), np.repeat(np.arange(len(groups)), 5)
    )
    return float(similarity[same].mean() - similarity[different].mean())


def word2vec(root: Path, scale: float) -> dict[str, Any]:
    import gensim

    texts, groups = sentences(np.random.default_rng(1), int(20_000 * scale))
    hp = {
        "mode": "skipgram",
        "vector_dim": 50,
        "epochs": 5,
        "min_count": 2,
        "window_size": 5,
        "learning_rate": 0.025,
        "sampling_threshold": 0.001,
    }
    with Clock() as cairn:
        model = through_cairn(root, "blazingtext", hp, pd.DataFrame({"text": texts}))

    def served(word: str) -> Any:
        return model.predict(np.array([[word]], dtype=object))[0, 0]

    with Clock() as alone:
        direct = gensim.models.Word2Vec(
            [t.split() for t in texts],
            vector_size=50,
            epochs=5,
            min_count=2,
            window=5,
            alpha=0.025,
            sample=0.001,
            sg=1,
            seed=0,
            workers=1,
        )
    return {
        "algorithm": "blazingtext skipgram (gensim Word2Vec)",
        "data": f"{len(texts)} sentences, 8 planted word groups",
        "quality": "cosine within planted groups minus across (higher is better)",
        "cairn_s": cairn.seconds(),
        "direct_s": alone.seconds(),
        "cairn_quality": separation(served, groups),
        "direct_quality": separation(lambda w: direct.wv[w], groups),
    }


def rcf(root: Path, scale: float) -> dict[str, Any]:
    import rrcf
    from cairn.builtins.random_cut_forest import codisp

    rng = np.random.default_rng(2)
    rows = int(2000 * scale)
    x = rng.normal(size=(rows, 5))
    test = np.vstack([rng.normal(size=(50, 5)), rng.normal(size=(50, 5)) * 4 + 3])
    labels = np.r_[np.zeros(50), np.ones(50)]
    hp = {"num_trees": 100, "num_samples_per_tree": 256}
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)])
    with Clock() as cairn:
        model = through_cairn(root, "random-cut-forest", hp, frame)
    with Clock() as cairn_scoring:
        cairn_scores = model.predict(test.astype(np.float32))
    with Clock() as alone:
        trees = [
            rrcf.RCTree(x[rng.choice(rows, 256, replace=False)], random_state=i) for i in range(100)
        ]
    with Clock() as alone_scoring:
        direct_scores = [codisp(trees, row) for row in test]
    return {
        "algorithm": "random-cut-forest (rrcf)",
        "data": f"{rows} x 5 normal rows; 50 normal + 50 wide test rows",
        "quality": "ROC AUC of the score on the test rows",
        "cairn_s": cairn.seconds(),
        "direct_s": alone.seconds(),
        "cairn_quality": float(roc_auc_score(labels, cairn_scores)),
        "direct_quality": float(roc_auc_score(labels, direct_scores)),
        "scoring_100_rows_s": {
            "cairn": cairn_scoring.seconds(),
            "direct": alone_scoring.seconds(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply the data sizes.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        for bench in (lda, word2vec, rcf):
            print(json.dumps(bench(root, args.scale)), flush=True)


if __name__ == "__main__":
    main()
