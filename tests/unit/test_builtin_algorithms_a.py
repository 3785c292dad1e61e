"""The newer built-ins (part A): each learns what a user wants from it and is served as trained."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from cairn.artifacts import UnsupportedModelPackage
from cairn.contracts.events import InputChannel
from cairn.errors import InvalidInput
from cairn.store import InMemoryObjectStore
from sklearn.metrics import roc_auc_score

from services.trainer.algorithms import ALGORITHMS, InvalidHyperparameters, TrainingContext
from services.trainer.algorithms.base import MissingExtra
from services.trainer.channels import read_channel, resolve_channel
from tests.support.builtin_serving import (
    answer_document,
    batch_predict,
    batch_transform,
    invoke,
    package,
    packaged,
    train,
)

JSONLINES = "application/jsonlines"

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():  # small models: a second intra-op thread only adds contention
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ip_pairs(rng: np.random.Generator, users: int, per_user: int) -> pd.DataFrame:
    """Each user logs in from a few addresses of their own /24 subnet."""
    rows = []
    for user in range(users):
        subnet = f"{rng.integers(11, 200)}.{rng.integers(0, 255)}.{rng.integers(0, 255)}"
        for _ in range(per_user):
            rows.append((f"user-{user}", f"{subnet}.{rng.integers(1, 12)}"))
    return pd.DataFrame(rows, columns=["entity", "ip"]).sample(frac=1.0, random_state=0)


def test_ip_insights_scores_unseen_entity_ip_pairs_as_anomalous() -> None:
    rng = np.random.default_rng(0)
    frame = ip_pairs(rng, users=60, per_user=30)
    cut = int(len(frame) * 0.9)
    hp = {
        "num_entity_vectors": 200,
        "vector_dim": 16,
        "epochs": 15,
        "mini_batch_size": 256,
        "learning_rate": 0.02,
    }
    data, trained = train("ip-insights", hp, frame[:cut], frame[cut:])
    assert trained.metrics["validation:discriminator_auc"] > 0.9, trained.metrics
    model = package("ip-insights", data, trained)
    usual = frame[cut:].to_numpy()
    unusual = usual.copy()
    unusual[:, 1] = [
        f"{rng.integers(201, 254)}.{rng.integers(0, 255)}.7.{i % 250 + 1}"
        for i in range(len(unusual))
    ]
    records = [{"entity": e, "ip": ip} for e, ip in np.vstack([usual, unusual]).tolist()]
    answer = invoke(model, {"instances": records})
    scores = np.array([row["dot_product"] for row in answer])
    labels = np.r_[np.zeros(len(usual)), np.ones(len(unusual))]
    assert roc_auc_score(labels, -scores) > 0.9  # low dot product = anomalous pair
    batch = batch_predict(
        model, pd.DataFrame(np.vstack([usual, unusual]), columns=["entity", "ip"])
    )
    np.testing.assert_allclose(batch, scores, rtol=1e-5)
    with pytest.raises(Exception, match="not an IPv4"):
        invoke(model, {"instances": [["user-1", "999.1.1.1"]]})
    assert set(answer_document(model, {"instances": records[:2]})) == {"predictions"}
    store, uri = packaged("ip-insights", data, trained)
    rows = "".join(f"{e},{ip}\n" for e, ip in usual[:5].tolist()) + "user-1,999.1.1.1\n"
    out = batch_transform(store, uri, {"pairs.csv": rows.encode()}, "text/csv", JSONLINES)
    lines = [json.loads(line) for line in out["pairs.csv"].splitlines()]
    assert [set(line) for line in lines] == [{"dot_product"}] * 5  # SageMaker's JSON Lines
    np.testing.assert_allclose([line["dot_product"] for line in lines], scores[:5], rtol=1e-5)
    assert b"not an IPv4" in out["errors"]  # the bad record fails alone, with its reason


def planted_topics(rng: np.random.Generator, docs: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Documents over 30 words, each mostly from one of 3 topics owning 10 words apiece."""
    topics = np.full((3, 30), 0.02 / 20)
    for topic in range(3):
        topics[topic, topic * 10 : topic * 10 + 10] = 0.98 / 10
    planted = rng.integers(0, 3, size=docs)
    counts = np.array([rng.multinomial(60, topics[t]) for t in planted])
    return pd.DataFrame(counts, columns=[f"w{i}" for i in range(30)]), planted


def purity(weights: np.ndarray, planted: np.ndarray) -> float:
    """Share of documents whose dominant topic is their planted topic's majority topic."""
    dominant = weights.argmax(axis=1)
    return sum(np.bincount(dominant[planted == t]).max() for t in range(3)) / len(planted)


def test_lda_recovers_planted_topics_and_serves_topic_mixtures() -> None:
    frame, planted = planted_topics(np.random.default_rng(1), 300)
    hp = {"num_topics": 3, "max_iterations": 10, "alpha0": 0.3, "mini_batch_size": 100}
    data, trained = train("lda", hp, frame[:240], frame[240:])
    assert trained.metrics["validation:pwll"] > np.log(1 / 30)  # beats a uniform unigram
    words = trained.model[-1].components_.argsort(axis=1)[:, -10:]
    owners = sorted({int(np.bincount(top // 10).argmax()) for top in words})
    assert owners == [0, 1, 2]  # each learned topic's top words are one planted topic's
    model = package("lda", data, trained)
    answer = invoke(model, frame[240:].to_numpy().tolist())
    mixtures = np.array([row["topic_mixture"] for row in answer])
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, rtol=1e-5)
    assert purity(mixtures, planted[240:]) > 0.9
    with pytest.raises(InvalidInput, match="negative"):
        invoke(model, [[-1] * 30])
    counts = frame[240:250].to_csv(header=False, index=False).encode()
    out = batch_transform(*packaged("lda", data, trained), {"docs.csv": counts}, "text/csv")
    batch = np.array([[float(v) for v in line.split(b",")] for line in out["docs.csv"].split()])
    np.testing.assert_allclose(batch, mixtures[:10], rtol=1e-4)


def test_ntm_topic_weights_separate_planted_topics() -> None:
    frame, planted = planted_topics(np.random.default_rng(2), 400)
    hp = {
        "num_topics": 3,
        "epochs": 40,
        "optimizer": "adam",
        "learning_rate": 0.01,
        "encoder_layers": "32",
        "mini_batch_size": 64,
        "num_patience_epochs": 10,
    }
    logs: list[str] = []
    gpu_job = TrainingContext(device_requested="gpu", log=logs.append)
    data, trained = train("ntm", hp, frame[:320], frame[320:], ctx=gpu_job)
    assert trained.metrics["validation:total_loss"] < np.log(30)  # beats a uniform unigram
    # A GPU job trains on CUDA where torch sees a device, else on the CPU, and says which.
    assert trained.device == ("gpu" if torch.cuda.is_available() else "cpu")
    assert any(("cuda:0" if torch.cuda.is_available() else "no CUDA") in line for line in logs)
    model = package("ntm", data, trained)
    assert model.manifest.device == trained.device
    answer = invoke(model, {"instances": frame[320:].to_dict(orient="records")})
    weights = np.array([row["topic_weights"] for row in answer])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert purity(weights, planted[320:]) > 0.85
    with pytest.raises(InvalidInput, match="negative"):
        invoke(model, [[-1] * 30])
    docs = "".join(json.dumps({"features": row}) + "\n" for row in frame[320:325].values.tolist())
    out = batch_transform(*packaged("ntm", data, trained), {"d.jsonl": docs.encode()}, JSONLINES)
    lines = [json.loads(line)["topic_weights"] for line in out["d.jsonl"].splitlines()]
    np.testing.assert_allclose(lines, weights[:5], rtol=1e-4)


def test_factorization_machines_learn_sparse_interactions_a_constant_cannot() -> None:
    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    pairs = [(u, i) for u in range(40) for i in range(40)]
    chosen = rng.permutation(len(pairs))[:1400]
    frame = pd.DataFrame(
        [
            (f"u{pairs[k][0]}", f"i{pairs[k][1]}", int(users[pairs[k][0]] @ items[pairs[k][1]] > 0))
            for k in chosen
        ],
        columns=["user", "item", "label"],
    )
    hp = {
        "num_factors": 6,
        "predictor_type": "binary_classifier",
        "epochs": 60,
        "mini_batch_size": 128,
        "bias_lr": 0.05,
        "linear_lr": 0.05,
        "factors_lr": 0.05,
        "factors_init_sigma": 0.1,
        "factors_wd": 1e-5,
    }
    data, trained = train("factorization-machines", hp, frame[:1150], frame[1150:], "label")
    majority = max(frame["label"][1150:].mean(), 1 - frame["label"][1150:].mean())
    accuracy = trained.metrics["validation:binary_classification_accuracy"]
    assert accuracy > majority + 0.15, trained.metrics
    model = package("factorization-machines", data, trained)
    held_out = frame[1150:]
    answer = invoke(model, {"instances": held_out[["user", "item"]].to_dict(orient="records")})
    assert set(answer[0]) == {"score", "predicted_label"}
    predicted = np.array([row["predicted_label"] for row in answer])
    assert (predicted == held_out["label"].to_numpy()).mean() == pytest.approx(accuracy, abs=1e-6)
    unseen = invoke(model, {"instances": [{"user": "new-user", "item": "i1"}]})
    assert 0.0 <= unseen[0]["score"] <= 1.0  # an unseen id has its own slot, not an error
    ratings = frame.assign(
        label=[
            float(users[int(u[1:])] @ items[int(i[1:])]) for u, i in frame[["user", "item"]].values
        ]
    )
    regressor = {**hp, "predictor_type": "regressor", "epochs": 40}
    _, fitted = train("factorization-machines", regressor, ratings[:1150], ratings[1150:], "label")
    assert fitted.metrics["validation:rmse"] < 0.7 * ratings["label"][1150:].std()


def test_random_cut_forest_scores_planted_anomalies_higher() -> None:
    rng = np.random.default_rng(4)
    normal = rng.normal(size=(400, 3))
    frame = pd.DataFrame(normal, columns=["a", "b", "c"])
    data, trained = train("random-cut-forest", {"num_trees": 50, "num_samples_per_tree": 64}, frame)
    assert trained.details["detector"].startswith("rrcf")
    model = package("random-cut-forest", data, trained)
    inliers = rng.normal(size=(8, 3))
    outliers = rng.normal(size=(8, 3)) + np.array([6.0, -6.0, 6.0])
    answer = invoke(model, np.vstack([inliers, outliers]).tolist())
    scores = np.array([row["score"] for row in answer])
    assert scores[8:].min() > np.quantile(scores[:8], 0.9)
    batch = batch_predict(model, pd.DataFrame(np.vstack([inliers, outliers]), columns=list("abc")))
    np.testing.assert_allclose(batch, scores)  # scoring leaves the trees as they were
    document = answer_document(model, inliers[:2].tolist())
    assert list(document) == ["scores"] and list(document["scores"][0]) == ["score"]
    rows = "".join(json.dumps(row) + "\n" for row in outliers[:3].tolist()).encode()
    out = batch_transform(
        *packaged("random-cut-forest", data, trained), {"x.jsonl": rows}, JSONLINES
    )
    lines = [json.loads(line) for line in out["x.jsonl"].splitlines()]
    np.testing.assert_allclose([line["score"] for line in lines], scores[8:11])


@pytest.mark.parametrize(
    ("name", "hp", "reason"),
    [
        ("ip-insights", {"num_entity_vectors": 10}, "vector_dim"),
        ("ip-insights", {"num_entity_vectors": 10, "vector_dim": 8, "epochs": 0}, "epochs"),
        ("ip-insights", {"num_entity_vectors": 10, "vector_dim": 8, "learning": 1}, "learning"),
        ("random-cut-forest", {"num_trees": 5}, "num_trees"),
        ("lda", {"num_topics": 0}, "num_topics"),
        ("ntm", {"num_topics": 3, "encoder_layers": "big"}, "encoder_layers"),
        ("ntm", {"num_topics": 3, "optimizer": "lbfgs"}, "optimizer"),
        ("factorization-machines", {"num_factors": 4}, "predictor_type"),
        (
            "factorization-machines",
            {"num_factors": 4, "predictor_type": "regressor", "bias_lr": -1},
            "bias_lr",
        ),
    ],
)
def test_bad_hyperparameters_fail_fast(name: str, hp: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidHyperparameters, match=reason):
        ALGORITHMS[name].parse(hp)


def topic_sentences(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """Sentences about sport or cooking, each drawing its words from its own vocabulary."""
    words = {
        "sport": [
            "goal",
            "match",
            "team",
            "score",
            "referee",
            "striker",
            "league",
            "keeper",
            "pitch",
            "coach",
        ],
        "food": [
            "recipe",
            "oven",
            "flour",
            "butter",
            "sauce",
            "simmer",
            "garlic",
            "onion",
            "bake",
            "pepper",
        ],
    }
    filler = ["the", "a", "and", "of", "with", "today", "very"]
    labels = rng.choice(["sport", "food"], size=rows)
    texts = [
        " ".join(rng.choice(words[label], size=6).tolist() + rng.choice(filler, 3).tolist())
        for label in labels
    ]
    return pd.DataFrame({"label": labels, "text": texts})


def test_blazingtext_supervised_classifies_text_well_above_chance() -> None:
    frame = topic_sentences(np.random.default_rng(5), 500)
    hp = {
        "mode": "supervised",
        "epochs": 10,
        "learning_rate": 0.5,
        "vector_dim": 16,
        "min_count": 1,
        "buckets": 5000,
    }
    data, trained = train("blazingtext", hp, frame[:400], frame[400:], "label")
    assert trained.metrics["validation:accuracy"] > 0.9, trained.metrics
    model = package("blazingtext", data, trained)
    fasttext_lines = pd.DataFrame({"line": "__label__" + frame["label"] + " " + frame["text"]})
    _, from_lines = train("blazingtext", hp, fasttext_lines[:400], fasttext_lines[400:])
    assert from_lines.metrics == trained.metrics  # the same data, given as fastText lines
    answer = answer_document(model, {"instances": ["goal referee striker the team", "bake oven"]})
    assert [row["label"] for row in answer] == [["__label__sport"], ["__label__food"]]  # a list
    assert all(0.5 < row["prob"][0] <= 1.0 for row in answer)
    assert answer_document(model, b"goal referee striker the team\nbake oven\n", "text/plain") == (
        answer
    )
    text_channel = "".join(line + "\n" for line in fasttext_lines["line"][:400]).encode()
    store = InMemoryObjectStore()
    store.put_bytes("data/bt/train.txt", text_channel)
    channel = InputChannel(name="train", uri="data/bt", content_type="text/plain")
    lines_frame = read_channel(store, resolve_channel(store, channel))
    _, from_text = train("blazingtext", hp, lines_frame, fasttext_lines[400:])
    assert from_text.metrics == trained.metrics  # SageMaker's text channel: the same data
    store, uri = packaged("blazingtext", data, trained)
    sources = b'{"source": "goal referee striker the team"}\n{"source": "bake oven"}\n'
    out = batch_transform(store, uri, {"s.jsonl": sources}, JSONLINES)
    assert [json.loads(line) for line in out["s.jsonl"].splitlines()] == answer
    out = batch_transform(
        store, uri, {"s.txt": b"goal referee striker the team\nbake oven\n"}, "text/plain"
    )
    assert [json.loads(line) for line in out["s.txt"].splitlines()] == answer


def test_blazingtext_word2vec_puts_co_occurring_words_together() -> None:
    frame = topic_sentences(np.random.default_rng(6), 600)[["text"]]
    hp = {
        "mode": "skipgram",
        "epochs": 15,
        "vector_dim": 16,
        "min_count": 2,
        "window_size": 4,
        "sampling_threshold": 0,
        "learning_rate": 0.025,
    }
    data, trained = train("blazingtext", hp, frame)
    assert trained.metrics["train:loss"] > 0
    model = package("blazingtext", data, trained)
    sport, food = ["goal", "striker", "league"], ["oven", "flour", "garlic"]
    answer = answer_document(model, {"instances": [*sport, *food, "unheard-of"]})
    assert [list(row) for row in answer] == [["vector", "word"]] * 7  # SageMaker's bare list
    assert [row["word"] for row in answer] == [*sport, *food, "unheard-of"]
    vectors = np.array([row["vector"] for row in answer])
    assert not vectors[-1].any()  # SageMaker answers zeros for a word outside the vocabulary
    unit = vectors[:6] / np.linalg.norm(vectors[:6], axis=1, keepdims=True)
    similarity = unit @ unit.T
    within = (similarity[:3, :3].sum() + similarity[3:, 3:].sum() - 6) / 12
    between = similarity[:3, 3:].mean()
    assert within > between + 0.3, (within, between)


def test_a_missing_extra_is_named_when_training_and_when_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = ip_pairs(np.random.default_rng(7), users=5, per_user=4)
    hp = {"num_entity_vectors": 20, "vector_dim": 4, "epochs": 1}
    data, trained = train("ip-insights", hp, frame)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if `cairn[deep]` were not installed
    with pytest.raises(MissingExtra, match=r"needs torch.*cairn\[deep\]"):
        ALGORITHMS["ip-insights"].parse(hp)
    with pytest.raises(MissingExtra, match=r"cairn\[deep\]"):
        ALGORITHMS["blazingtext"].parse({"mode": "supervised"})
    with pytest.raises(UnsupportedModelPackage, match=r"serving ip-insights needs torch"):
        package("ip-insights", data, trained)
