"""The deep built-ins (part B): each learns what a user wants from it, from SageMaker's file
formats, through the trainer's job path, and its package answers in SageMaker's response shape.

Every job runs through the trainer's `run_job` on an in-memory store (channel files in,
manifest and safe package out); every model is loaded back with `load_model` and asked through
`invoke`, the call the gateway makes. Data is generated here or ships with scikit-learn; models
are tiny.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cairn.artifacts import (
    Lineage,
    ModelManifest,
    Signature,
    load_model,
    read_manifest,
    write_model_package,
)
from cairn.contracts.events import InputChannel, TrainingJobRequested
from cairn.errors import InvalidInput
from cairn.store import InMemoryObjectStore
from PIL import Image

from services.trainer.algorithms import (
    ALGORITHMS,
    InvalidHyperparameters,
    TrainingContext,
    TrainingStopped,
)
from services.trainer.algorithms.deep_inputs import RawChannel
from services.trainer.domain import JobFailure
from services.trainer.execution import run_job
from tests.support.builtin_serving import batch_transform
from tests.support.deep_data import (
    detection_channel,
    digit_images,
    jsonl,
    png,
    reversal_pairs,
    seasonal_series,
    segmentation_channels,
    shape_scenes,
    topic_pairs,
)

torch = pytest.importorskip("torch")
JSONLINES = "application/jsonlines"


def tempfile_dir() -> Path:
    return Path(tempfile.gettempdir())


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():  # small models: a second intra-op thread only adds contention
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Job:
    """A finished job: its per-iteration progress, manifest and the served model."""

    def __init__(self, algorithm: str, hp: dict[str, Any], channels: dict[str, dict[str, bytes]]):
        self.store = InMemoryObjectStore()
        for name, files in channels.items():
            for path, data in files.items():
                self.store.put_bytes(f"data/{name}/{path}", data)
        request = TrainingJobRequested(
            job_name=f"{algorithm}-test",
            algorithm=algorithm,
            hyperparameters=hp,
            input_channels=[InputChannel(name=n, uri=f"data/{n}") for n in channels],
        )
        self.progress: list[tuple[int, dict[str, float]]] = []
        ctx = TrainingContext(progress=lambda i, total, m: self.progress.append((i, m)))
        result = run_job(self.store, request, "models/job/", ctx)
        self.uri, self.device = result.artifact_uri, result.device
        self.metrics = result.metrics
        self.manifest = read_manifest(self.store, result.artifact_uri)
        self.model = load_model(self.store, result.artifact_uri)

    def ask(self, body: Any, content_type: str = "application/json", accept: str = "") -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer, answer_type = asyncio.run(self.model.invoke(data, content_type, accept))
        return json.loads(answer) if answer_type == "application/json" else answer


def test_object2vec_separates_related_from_unrelated_pairs() -> None:
    hp = {
        "enc0_max_seq_len": 10,
        "enc0_vocab_size": 40,
        "enc0_network": "pooled_embedding",
        "enc_dim": 16,
        "enc0_token_embedding_dim": 16,
        "mlp_dim": 16,
        "epochs": 3,
        "learning_rate": 0.01,
        "mlp_activation": "relu",
    }
    job = Job(
        "object2vec",
        hp,
        {
            "train": {"pairs.jsonl": jsonl(topic_pairs(600, 1))},
            "validation": {"pairs.jsonl": jsonl(topic_pairs(200, 2))},
        },
    )
    assert [i for i, _ in job.progress] == [1, 2, 3]
    assert job.metrics["validation:accuracy"] > 0.85, job.metrics
    held_out = topic_pairs(100, 3)
    answer = job.ask({"instances": [{"in0": r["in0"], "in1": r["in1"]} for r in held_out]})
    related = np.array([row["scores"][1] for row in answer["predictions"]])
    labels = np.array([r["label"] for r in held_out])
    assert related[labels == 1].mean() > related[labels == 0].mean() + 0.5
    assert job.device == job.manifest.device == ("gpu" if torch.cuda.is_available() else "cpu")
    # Batch transform: SageMaker's JSON Lines, a record a line; a bad record fails alone.
    pairs = [{"in0": r["in0"], "in1": r["in1"]} for r in held_out[:4]]
    lines = jsonl([*pairs, {"in0": [40], "in1": [1]}]) + b"\n{not json\n"
    out = batch_transform(job.store, job.uri, {"pairs.jsonl": lines}, JSONLINES)
    batch = [json.loads(line) for line in out["pairs.jsonl"].splitlines()]
    assert [set(row) for row in batch] == [{"scores", "predicted_label"}] * 4
    for row, served in zip(batch, answer["predictions"], strict=False):
        assert row["scores"] == pytest.approx(served["scores"], abs=1e-5)
    assert b"outside 0..39" in out["errors"] and out["errors"].count(b"\n") == 2
    embeddings = job.ask({"instances": [{"in0": [1, 2, 3]}, {"in0": [31, 32]}]})
    assert [len(row["embeddings"]) for row in embeddings["predictions"]] == [16, 16]
    with pytest.raises(InvalidInput, match=r"outside 0\.\.39"):
        job.ask({"instances": [{"in0": [40], "in1": [1]}]})


def test_deepar_beats_a_seasonal_naive_forecast_and_serves_quantiles() -> None:
    horizon = 24
    test = seasonal_series(12, 24 * 10, seed=2)
    hp = {
        "time_freq": "H",
        "context_length": 48,
        "prediction_length": horizon,
        "epochs": 4,
        "num_cells": 32,
        "num_layers": 1,
        "mini_batch_size": 32,
        "num_batches_per_epoch": 25,
        "learning_rate": 0.01,
        "num_eval_samples": 40,
    }
    job = Job(
        "deepar",
        hp,
        {
            "train": {"series.json": jsonl(seasonal_series(20, 24 * 8, 1))},
            "test": {"series.json": jsonl(test)},
        },
    )
    naive = np.sqrt(
        np.mean(
            [
                (np.array(r["target"][-2 * horizon : -horizon]) - r["target"][-horizon:]) ** 2
                for r in test
            ]
        )
    )
    assert job.metrics["test:RMSE"] < 0.9 * naive, (job.metrics, naive)
    assert len(job.progress) == 4 and "test:mean_wQuantileLoss" in job.progress[-1][1]
    history = [{**r, "target": r["target"][:-horizon]} for r in test[:3]]
    answer = job.ask(
        {
            "instances": history,
            "configuration": {
                "num_samples": 50,
                "output_types": ["mean", "quantiles"],
                "quantiles": ["0.1", "0.9"],
            },
        }
    )
    for forecast in answer["predictions"]:
        low, high = np.array(forecast["quantiles"]["0.1"]), np.array(forecast["quantiles"]["0.9"])
        assert len(forecast["mean"]) == horizon and np.all(low <= high)
    with pytest.raises(InvalidInput, match="target"):
        job.ask({"instances": [{"start": "2024-01-01", "target": ["x"], "cat": [0]}]})
    # Batch transform takes its configuration from DEEPAR_INFERENCE_CONFIG, as SageMaker's.
    config = {"num_samples": 20, "output_types": ["quantiles"], "quantiles": ["0.5"]}
    out = batch_transform(
        job.store,
        job.uri,
        {"history.jsonl": jsonl(history)},
        JSONLINES,
        environment={"DEEPAR_INFERENCE_CONFIG": json.dumps(config)},
    )
    forecasts = [json.loads(line) for line in out["history.jsonl"].splitlines()]
    assert [list(f) for f in forecasts] == [["quantiles"]] * 3
    assert all(len(f["quantiles"]["0.5"]) == horizon for f in forecasts)


def test_seq2seq_learns_to_reverse_token_sequences() -> None:
    source, target = reversal_pairs(800, seed=1)
    valid_source, valid_target = reversal_pairs(150, seed=2)
    hp = {
        "max_seq_len_source": 8,
        "max_seq_len_target": 8,
        "rnn_num_hidden": 64,
        "num_embed_source": 16,
        "num_embed_target": 16,
        "batch_size": 32,
        "max_num_epochs": 4,
        "learning_rate": 0.005,
        "rnn_attention_type": "dot",
        "rnn_cell_type": "gru",
    }
    job = Job(
        "seq2seq",
        hp,
        {
            "train": {"train.src": source, "train.trg": target},
            "validation": {"val.src": valid_source, "val.trg": valid_target},
        },
    )
    assert job.metrics["validation:accuracy"] > 0.9, job.metrics
    sentences = valid_source.decode().splitlines()[:40]
    answer = job.ask({"instances": [{"data": s} for s in sentences]})
    hits = total = 0
    for sentence, row in zip(sentences, answer["predictions"], strict=True):
        expected, got = sentence.split()[::-1], row["target"].split()
        hits += sum(a == b for a, b in zip(expected, got, strict=False))
        total += len(expected)
    assert hits / total > 0.85
    # Batch transform: text lines, or SageMaker's JSON Lines `{"source": ...}` -> `{"target": ...}`
    text = "".join(line + "\n" for line in sentences[:5]).encode()
    sources = jsonl([{"source": line} for line in sentences[:5]])
    out = batch_transform(job.store, job.uri, {"s.txt": text}, "text/plain")
    from_json = batch_transform(job.store, job.uri, {"s.jsonl": sources}, JSONLINES)
    targets = [json.loads(line) for line in out["s.txt"].splitlines()]
    assert targets == [json.loads(line) for line in from_json["s.jsonl"].splitlines()]
    assert [t["target"] for t in targets] == [r["target"] for r in answer["predictions"][:5]]


def test_image_classifier_beats_chance_on_digits_rendered_as_images() -> None:
    train_images, train_lst = digit_images(0, 500)
    valid_images, valid_lst = digit_images(1500, 1700)
    hp = {
        "num_classes": 10,
        "num_training_samples": 500,
        "image_shape": "1,16,16",
        "num_layers": 8,
        "epochs": 3,
        "learning_rate": 0.01,
        "optimizer": "adam",
    }
    job = Job(
        "image-classification",
        hp,
        {
            "train": train_images,
            "train_lst": {"train.lst": train_lst},
            "validation": valid_images,
            "validation_lst": {"valid.lst": valid_lst},
        },
    )
    assert job.metrics["validation:accuracy"] > 0.5, job.metrics  # chance is 0.1
    assert job.manifest.class_labels == [str(k) for k in range(10)]
    lines = valid_lst.decode().splitlines()[:30]
    right = 0
    for line in lines:
        _, label, path = line.split("\t")
        probabilities = job.ask(valid_images[path], "image/png")  # SageMaker: a bare list
        assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-4
        right += int(np.argmax(probabilities)) == int(label)
    assert right >= 15
    wrapped = {
        "instances": [{"b64": base64.b64encode(valid_images[lines[0].split("\t")[2]]).decode()}]
    }
    assert len(job.ask(wrapped)["predictions"][0]) == 10
    with pytest.raises(InvalidInput, match="not a readable image"):
        job.ask(b"not an image", "image/png")
    # Batch transform: each image file is a record answered in `<file>.out` (as the endpoint
    # answers it); a `.lst` manifest beside them is a record a line, answered in JSON Lines.
    paths = [line.split("\t")[2] for line in lines[:3]]
    files = {path: valid_images[path] for path in paths}
    manifest = "".join(line + "\n" for line in lines[:3]) + "9\t0\t../../models/x.png\n"
    out = batch_transform(job.store, job.uri, {**files, "v.lst": manifest.encode()}, "image/png")
    for path in paths:
        assert json.loads(out[path]) == pytest.approx(job.ask(files[path], "image/png"), abs=1e-5)
    listed = [json.loads(line)["prediction"] for line in out["v.lst"].splitlines()]
    assert listed == [pytest.approx(json.loads(out[path]), abs=1e-5) for path in paths]
    assert b"not under the manifest's folder" in out["errors"]


def test_object_detection_finds_the_planted_shapes() -> None:
    images, manifest = detection_channel(200, 48, seed=1)
    valid_images, valid_manifest = detection_channel(40, 48, seed=2)
    hp = {
        "num_classes": 2,
        "num_training_samples": 200,
        "image_shape": 48,
        "epochs": 5,
        "learning_rate": 0.003,
        "optimizer": "adam",
        "mini_batch_size": 16,
        "base_width": 8,
    }
    job = Job(
        "object-detection",
        hp,
        {
            "train": images,
            "train_lst": {"train.lst": manifest},
            "validation": valid_images,
            "validation_lst": {"valid.lst": valid_manifest},
        },
    )
    assert job.metrics["validation:mAP"] > 0.5, job.metrics
    scenes, boxes, _ = shape_scenes(20, 48, seed=3)
    found = 0
    for scene, planted in zip(scenes, boxes, strict=True):
        detections = job.ask(png(scene), "image/png")["prediction"]
        for cls, x0, y0, x1, y1 in planted:
            truth = np.array([x0, y0, x1, y1]) / 48
            found += any(
                int(d[0]) == cls and d[1] > 0.3 and iou(d[2:], truth) > 0.5 for d in detections
            )
    assert found >= 0.8 * sum(len(p) for p in boxes)
    out = batch_transform(job.store, job.uri, {"scene.png": png(scenes[0])}, "application/x-image")
    assert json.loads(out["scene.png"]) == job.ask(png(scenes[0]), "image/png")


def iou(a: list[float], b: np.ndarray) -> float:
    low, high = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    overlap = float(np.clip(high - low, 0, None).prod())
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return overlap / (area - overlap)


def test_semantic_segmentation_beats_a_trivial_mask() -> None:
    images, masks = segmentation_channels(120, 32, seed=1)
    valid_images, valid_masks = segmentation_channels(30, 32, seed=2)
    hp = {
        "num_classes": 3,
        "num_training_samples": 120,
        "crop_size": 32,
        "epochs": 6,
        "learning_rate": 0.005,
        "optimizer": "adam",
        "mini_batch_size": 16,
        "base_width": 8,
        "depth": 2,
    }
    job = Job(
        "semantic-segmentation",
        hp,
        {
            "train": images,
            "train_annotation": masks,
            "validation": valid_images,
            "validation_annotation": valid_masks,
        },
    )
    scenes, _, truths = shape_scenes(10, 32, seed=3)
    background = np.mean([(t == 0).mean() for t in truths])  # the trivial mask's IoU on class 0
    assert job.metrics["validation:mIOU"] > background / 3 + 0.2, job.metrics
    served = job.ask(png(scenes[0]), "image/png", accept="image/png")  # class indices
    mask = np.asarray(Image.open(io.BytesIO(served)))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1, 2}
    as_json = job.ask(png(scenes[0]), "image/png", accept="application/json")
    assert as_json["shape"] == [32, 32] and np.array_equal(np.array(as_json["mask"]), mask)
    out = batch_transform(job.store, job.uri, {"a.png": png(scenes[0])}, "image/png", "image/png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out["a.png"]))), mask)


def train_policy(hp: dict[str, Any]) -> tuple[Any, list[dict[str, float]], Any, Any]:
    """Train on the environment (an RL job has no channels), package it and load it back."""
    built_in = ALGORITHMS["reinforcement-learning"]
    progress: list[dict[str, float]] = []
    trained = built_in.train_files(
        {}, built_in.parse(hp), TrainingContext(progress=lambda i, t, m: progress.append(m))
    )
    store = InMemoryObjectStore()
    manifest = ModelManifest(
        framework=trained.framework,
        framework_version=trained.framework_version,
        algorithm="reinforcement-learning",
        task=trained.task,
        signature=Signature(outputs=trained.outputs),
        metrics=trained.metrics,
        lineage=Lineage(algorithm="reinforcement-learning", hyperparameters=hp),
    )
    uri = write_model_package(store, "models/rl/", manifest, trained.files)
    return trained, progress, load_model(store, uri), (store, uri)


def test_reinforcement_learning_balances_cartpole_and_serves_actions() -> None:
    pytest.importorskip("stable_baselines3")
    hp = {
        "env": "CartPole-v1",
        "total_timesteps": 3000,
        "n_steps": 128,
        "batch_size": 64,
        "learning_rate": 0.005,
        "n_epochs": 4,
        "eval_episodes": 5,
    }
    sb3_folders = set(tempfile_dir().glob("SB3-*"))
    trained, progress, model, (store, uri) = train_policy(hp)
    assert set(tempfile_dir().glob("SB3-*")) == sb3_folders  # SB3 logs nowhere on disk
    assert "train:episode_reward_mean" in progress[0]
    assert trained.metrics["validation:episode_reward_mean"] >= 150, trained.metrics  # random ~22
    import gymnasium

    env, reward, done = gymnasium.make("CartPole-v1"), 0.0, False
    state, _ = env.reset(seed=7)
    while not done:  # the served policy, one request a step, balances the pole too
        body, _ = asyncio.run(
            model.invoke(
                json.dumps({"instances": [state.tolist()]}).encode(), "application/json", ""
            )
        )
        action = json.loads(body)["predictions"][0]["action"]
        state, step_reward, terminated, truncated, _ = env.step(action)
        reward, done = reward + float(step_reward), terminated or truncated
    assert reward >= 150
    with pytest.raises(InvalidInput, match="shape"):
        asyncio.run(model.invoke(b'{"instances": [[1, 2]]}', "application/json", ""))
    observations = [env.reset(seed=seed)[0].tolist() for seed in range(4)]
    states = b"".join(json.dumps(state).encode() + b"\n" for state in observations)
    out = batch_transform(store, uri, {"states.jsonl": states}, JSONLINES)  # a state a line
    served, _ = asyncio.run(
        model.invoke(json.dumps({"instances": observations}).encode(), "application/json", "")
    )
    batch = [json.loads(line) for line in out["states.jsonl"].splitlines()]
    assert batch == json.loads(served)["predictions"] and set(batch[0]) == {"action"}


@pytest.mark.long
def test_reinforcement_learning_solves_cartpole() -> None:
    pytest.importorskip("stable_baselines3")
    hp = {
        "env": "CartPole-v1",
        "total_timesteps": 20000,
        "n_steps": 256,
        "batch_size": 64,
        "learning_rate": 0.003,
        "n_epochs": 10,
        "eval_episodes": 20,
    }
    trained, *_ = train_policy(hp)
    assert trained.metrics["validation:episode_reward_mean"] >= 475  # Gymnasium's "solved"


@pytest.mark.parametrize(
    ("algorithm", "hp", "problem"),
    [
        ("object2vec", {"enc0_max_seq_len": 10}, "enc0_vocab_size"),
        ("object2vec", {"enc0_max_seq_len": 1, "enc0_vocab_size": 9, "enc_dim": 2}, "enc_dim"),
        (
            "deepar",
            {"time_freq": "fortnight", "context_length": 1, "prediction_length": 1, "epochs": 1},
            "time_freq",
        ),
        (
            "deepar",
            {
                "time_freq": "H",
                "context_length": 1,
                "prediction_length": 1,
                "epochs": 1,
                "likelihood": "beta",
            },
            "likelihood",
        ),
        ("seq2seq", {"beam_size": 5}, "beam_size"),
        (
            "image-classification",
            {"num_classes": 2, "num_training_samples": 1, "num_layers": 152},
            "num_layers",
        ),
        (
            "image-classification",
            {"num_classes": 2, "num_training_samples": 1, "use_pretrained_model": 1},
            "use_pretrained_model",
        ),
        (
            "object-detection",
            {"num_classes": 2, "num_training_samples": 1, "base_network": "vgg-16"},
            "base_network",
        ),
        (
            "semantic-segmentation",
            {"num_classes": 2, "num_training_samples": 1, "crop_size": 30},
            "crop_size",
        ),
        ("reinforcement-learning", {"env": "os:system-v0"}, "env"),
        ("reinforcement-learning", {"env": "NoSuchWorld-v0"}, "not a registered"),
    ],
)
def test_bad_hyperparameters_fail_fast_naming_the_problem(
    algorithm: str, hp: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidHyperparameters, match=problem):
        ALGORITHMS[algorithm].parse(hp)


def test_every_torch_algorithm_picks_its_device_through_the_one_helper() -> None:
    """`torch_device` is where CUDA is chosen (and logged); the device lands in the package."""
    for name, algorithm in ALGORITHMS.items():
        source = inspect.getsource(sys.modules[type(algorithm).__module__])
        if "import torch" in source:
            assert "torch_device(" in source, f"{name} chooses its device by itself"
            assert "device=device_name" in source, f"{name} does not record its device"


def test_file_jobs_refuse_channels_and_files_they_cannot_read() -> None:
    hp = {"num_classes": 2, "num_training_samples": 2, "image_shape": "1,16,16", "num_layers": 8}
    with pytest.raises(JobFailure, match="unexpected channel"):
        Job("image-classification", hp, {"train": {"a/1.png": b"x"}, "extra": {"f": b"1"}})
    with pytest.raises(JobFailure, match="not a readable image"):
        Job("image-classification", hp, {"train": {"a/1.png": b"x", "b/2.png": b"y"}})
    with pytest.raises(JobFailure, match="line 1"):
        Job(
            "object2vec",
            {"enc0_max_seq_len": 4, "enc0_vocab_size": 9},
            {"train": {"bad.jsonl": b"{not json"}},
        )


def test_the_other_sagemaker_variants_train_and_serve() -> None:
    """Encoders, likelihoods, cells, attention, vocab files and folder layouts: one epoch each."""
    pairs = {
        "train": {"p.jsonl": jsonl([{**r, "label": float(r["label"])} for r in topic_pairs(48, 1)])}
    }
    regressor = Job(
        "object2vec",
        {
            "enc0_max_seq_len": 8,
            "enc0_vocab_size": 40,
            "enc0_network": "bilstm",
            "enc1_network": "hcnn",
            "enc_dim": 8,
            "enc0_token_embedding_dim": 8,
            "enc1_token_embedding_dim": 8,
            "mlp_dim": 8,
            "epochs": 1,
            "output_layer": "mean_squared_error",
            "tied_token_embedding_weight": True,
        },
        pairs,
    )
    assert "train:mean_squared_error" in regressor.metrics
    scored = regressor.ask({"instances": [{"in0": [1], "in1": [2, 3]}]})["predictions"]
    assert len(scored[0]["scores"]) == 1

    series = seasonal_series(4, 24 * 5, seed=1)
    forecaster = Job(
        "deepar",
        {
            "time_freq": "2H",
            "context_length": 12,
            "prediction_length": 6,
            "epochs": 1,
            "num_cells": 8,
            "likelihood": "gaussian",
            "cardinality": "ignore",
            "num_batches_per_epoch": 2,
            "mini_batch_size": 4,
        },
        {"train": {"s.jsonl": jsonl(series)}},
    )
    answer = forecaster.ask(
        {
            "instances": [{"start": "2024-01-01", "target": [1.0, 2.0]}],
            "configuration": {"num_samples": 3, "output_types": ["samples"]},
        }
    )
    assert np.array(answer["predictions"][0]["samples"]).shape == (3, 6)

    source, target = reversal_pairs(64, seed=1)
    vocab = {
        "vocab.src.json": json.dumps(
            {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *"abcdefgh"])}
        ).encode()
    }
    vocab["vocab.trg.json"] = vocab["vocab.src.json"]
    for attention in ("mlp", "bilinear"):
        translator = Job(
            "seq2seq",
            {
                "rnn_num_hidden": 8,
                "num_embed_source": 4,
                "num_embed_target": 4,
                "max_num_epochs": 1,
                "rnn_cell_type": "lstm",
                "rnn_attention_type": attention,
                "max_seq_len_target": 5,
            },
            {"train": {"t.src": source, "t.trg": target}, "vocab": vocab},
        )
        reply = translator.ask({"instances": [{"data": "a b zz"}]})["predictions"][0]["target"]
        assert len(reply.split()) <= 6 and "zz" not in reply

    digits, manifest = digit_images(0, 20, side=32)
    folders = {
        f"class{line.split(chr(9))[1]}/{line.split(chr(9))[0]}.png": digits[line.split("\t")[2]]
        for line in manifest.decode().splitlines()
    }
    names = sorted({path.split("/")[0] for path in folders})
    classifier = Job(
        "image-classification",
        {
            "num_classes": len(names),
            "num_training_samples": 20,
            "image_shape": "3,32,32",
            "num_layers": 18,
            "epochs": 1,
            "mini_batch_size": 8,
        },
        {"train": folders},
    )
    assert classifier.manifest.class_labels == names

    images, masks = segmentation_channels(6, 16, seed=1)
    masks["0.png"] = png(np.full((16, 16), 255))  # all "ignore": no signal, no error
    segmenter = Job(
        "semantic-segmentation",
        {
            "num_classes": 3,
            "num_training_samples": 6,
            "crop_size": 16,
            "epochs": 1,
            "base_width": 4,
            "depth": 1,
        },
        {"train": images, "train_annotation": masks},
    )
    assert 0 <= segmenter.metrics["train:mIOU"] <= 1


def test_a_stop_request_ends_training_after_the_epoch_and_can_keep_the_model() -> None:
    built_in = ALGORITHMS["object2vec"]
    hp = built_in.parse(
        {
            "enc0_max_seq_len": 8,
            "enc0_vocab_size": 40,
            "enc_dim": 4,
            "enc0_token_embedding_dim": 4,
            "mlp_dim": 4,
            "epochs": 50,
        }
    )
    channels = {"train": RawChannel("train", {"p.jsonl": jsonl(topic_pairs(32, 1))})}
    epochs: list[int] = []
    for keep in (False, True):
        epochs.clear()
        ctx = TrainingContext(
            progress=lambda i, t, m: epochs.append(i),
            should_stop=lambda: bool(epochs),
            stop_requested=lambda: bool(epochs),
            keep_partial_model=lambda keep=keep: keep,
        )
        if not keep:
            with pytest.raises(TrainingStopped):
                built_in.train_files(channels, hp, ctx)
        else:
            assert "model.safetensors" in built_in.train_files(channels, hp, ctx).files
        assert epochs == [1]
