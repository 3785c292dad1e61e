"""BlazingText (SageMaker's `blazingtext`): Word2Vec on gensim, text classification on torch.

Input: one text column of whitespace-tokenised sentences (CSV, JSON Lines or Parquet); for
`mode=supervised` also a label column (`label` by default), or one column of fastText lines
(`__label__pos great film`) that is split into both. Word2Vec modes (`skipgram`, `cbow`,
`batch_skipgram`) train gensim's Word2Vec and report its training loss per epoch; `supervised`
trains a fastText classifier (averaged word and hashed n-gram vectors, SGD with linear decay) and
reports accuracy per epoch.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from cairn.artifacts import OutputColumn
from cairn.errors import InvalidInput
from pydantic import Field

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    InvalidHyperparameters,
    MissingExtra,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.torch_support import TORCH
from services.trainer.features import LabelMode, TrainingData, prepare

WORD2VEC = (("gensim", "safetensors"), "training")
LABEL_PREFIX = "__label__"


class BlazingTextHyperparameters(Hyperparameters):
    mode: Literal["skipgram", "cbow", "batch_skipgram", "supervised"]
    vector_dim: int = Field(default=100, ge=4, le=1000)
    epochs: int = Field(default=5, ge=1, le=1000)
    learning_rate: float = Field(default=0.05, gt=0, le=10)
    min_count: int = Field(default=5, ge=1, le=1_000_000)
    # Word2Vec modes
    window_size: int = Field(default=5, ge=1, le=50)
    negative_samples: int = Field(default=5, ge=1, le=100)
    sampling_threshold: float = Field(default=0.0001, ge=0, le=1)
    batch_size: int = Field(default=11, ge=1, le=10_000)
    subwords: Literal[False] = Field(default=False, description="Subword vectors: not offered.")
    evaluation: bool = Field(default=True, description="Accepted; WS-353 is not shipped here.")
    # supervised mode
    word_ngrams: int = Field(default=2, ge=1, le=5)
    buckets: int = Field(default=2_000_000, ge=0, le=10_000_000)
    early_stopping: bool = False
    patience: int = Field(default=4, ge=1, le=100)
    min_epochs: int = Field(default=5, ge=1, le=1000)
    seed: int = 0


class BlazingText(Algorithm[BlazingTextHyperparameters]):
    name = "blazingtext"
    hyperparameters_model = BlazingTextHyperparameters

    def parse(self, raw: Mapping[str, Any]) -> BlazingTextHyperparameters:
        from cairn.builtins import missing_extra

        hp = super().parse(raw)
        needs = TORCH if hp.mode == "supervised" else WORD2VEC
        why = missing_extra(*needs, what=f"blazingtext mode {hp.mode}")
        if why is not None:
            raise MissingExtra(why)
        return hp

    def label_mode(self, hyperparameters: BlazingTextHyperparameters) -> LabelMode:
        return "classes" if hyperparameters.mode == "supervised" else "none"

    def prepare(
        self,
        train: pd.DataFrame,
        validation: pd.DataFrame | None,
        *,
        label_column: str | None,
        hyperparameters: BlazingTextHyperparameters,
    ) -> TrainingData:
        if hyperparameters.mode == "supervised" and label_column is None:
            train, validation = _split_labels(train), _split_labels(validation)
        data = prepare(
            train,
            validation,
            label_column=label_column,
            mode=self.label_mode(hyperparameters),
            text_inputs=True,
        )
        if len(data.inputs) != 1:
            raise InvalidInput(
                f"blazingtext takes one text column (besides a label); the channel has "
                f"{[c.name for c in data.inputs]}"
            )
        return data

    def train(
        self, data: TrainingData, hyperparameters: BlazingTextHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        if hyperparameters.mode == "supervised":
            return _supervised(data, hyperparameters, ctx)
        return _word2vec(data, hyperparameters, ctx)


def _split_labels(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """A single column of fastText lines (`__label__pos great film`) -> label and text columns."""
    if frame is None or frame.shape[1] != 1:
        return frame
    lines = frame.iloc[:, 0].astype(str)
    if not lines.str.startswith(LABEL_PREFIX).all():
        return frame
    parts = lines.str.split(n=1, expand=True).reindex(columns=[0, 1]).fillna("")
    return pd.DataFrame({"label": parts[0], "text": parts[1]})


def _word2vec(
    data: TrainingData, hp: BlazingTextHyperparameters, ctx: TrainingContext
) -> TrainedModel:
    import gensim
    from cairn.builtins.blazingtext import VECTORS_FILE, VOCABULARY_FILE, tokens
    from gensim.models.callbacks import CallbackAny2Vec
    from safetensors.numpy import save

    class Progress(CallbackAny2Vec):  # type: ignore[misc]
        def __init__(self) -> None:
            self.epoch, self.previous = 0, 0.0
            self.metrics: dict[str, float] = {}

        def on_epoch_end(self, model: Any) -> None:
            self.epoch += 1
            total = float(model.get_latest_training_loss())
            self.metrics = {"train:loss": total - self.previous}
            self.previous = total
            ctx.progress(self.epoch, hp.epochs, self.metrics)

    sentences = [tokens(text) for text in data.x_train[:, 0]]
    progress = Progress()
    model = gensim.models.Word2Vec(
        sentences=sentences,
        vector_size=hp.vector_dim,
        window=hp.window_size,
        negative=hp.negative_samples,
        min_count=hp.min_count,
        sample=hp.sampling_threshold,
        alpha=hp.learning_rate,
        sg=0 if hp.mode == "cbow" else 1,
        epochs=hp.epochs,
        seed=hp.seed,
        workers=1,
        compute_loss=True,
        callbacks=[progress],
    )
    ensure_not_stopped(ctx)
    vocabulary = list(model.wv.index_to_key)
    if not vocabulary:
        raise InvalidHyperparameters(f"no word occurs min_count={hp.min_count} times")
    vectors = np.ascontiguousarray(model.wv.vectors, dtype=np.float32)
    return TrainedModel(
        framework="gensim",
        framework_version=gensim.__version__,
        task="embedding",
        files={
            VECTORS_FILE: save({"vectors": vectors}),
            VOCABULARY_FILE: json.dumps(vocabulary).encode(),
        },
        outputs=[OutputColumn(name="vector"), OutputColumn(name="word")],
        metrics={**progress.metrics, "train:vocabulary_size": float(len(vocabulary))},
        details={"mode": hp.mode, "vector_dim": hp.vector_dim},
        model=model,
    )


def _supervised(
    data: TrainingData, hp: BlazingTextHyperparameters, ctx: TrainingContext
) -> TrainedModel:
    import torch
    from cairn.builtins import blazingtext as served

    from services.trainer.algorithms import torch_support as ts

    counts = Counter(word for text in data.x_train[:, 0] for word in served.tokens(text))
    vocabulary = sorted(word for word, count in counts.items() if count >= hp.min_count)
    index = {word: i for i, word in enumerate(vocabulary)}
    architecture = {
        "vocabulary_size": len(vocabulary),
        "buckets": hp.buckets if hp.word_ngrams > 1 else 0,
        "word_ngrams": hp.word_ngrams,
        "vector_dim": hp.vector_dim,
        "num_labels": len(data.class_labels or []),
    }
    device, device_name = ts.torch_device(ctx)
    rng = ts.seed_everything(hp.seed)
    network = served.build(architecture, sparse=True).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=hp.learning_rate)
    texts = [str(text) for text in data.x_train[:, 0]]
    assert data.y_train is not None
    labels = torch.from_numpy(data.y_train.astype(np.int64)).to(device)
    steps = hp.epochs * -(-len(texts) // 32)
    step, best, waited = 0, -1.0, 0
    metrics: dict[str, float] = {}
    for epoch in ts.epochs(ctx, hp.epochs):
        network.train()
        for batch in ts.minibatches(len(texts), 32, rng):
            ids, offsets = served.token_ids(
                [texts[i] for i in batch], index, architecture["buckets"], hp.word_ngrams
            )
            for group in optimizer.param_groups:  # fastText's linearly decaying rate
                group["lr"] = hp.learning_rate * max(0.0, 1.0 - step / steps)
            optimizer.zero_grad()
            logits = network(torch.from_numpy(ids).to(device), torch.from_numpy(offsets).to(device))
            # summed, not averaged: each sentence moves the weights as in fastText's SGD
            loss = torch.nn.functional.cross_entropy(
                logits, labels[torch.from_numpy(batch).to(device)], reduction="sum"
            )
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            step += 1
        metrics = _accuracy(network, data, index, architecture, device)
        ctx.progress(epoch, hp.epochs, metrics)
        accuracy = next(iter(metrics.values()))
        best, waited = (accuracy, 0) if accuracy > best else (best, waited + 1)
        if hp.early_stopping and epoch >= hp.min_epochs and waited >= hp.patience:
            ctx.log(f"early stop after epoch {epoch}: accuracy did not improve")
            break
    ensure_not_stopped(ctx)
    return ts.torch_model(
        network,
        architecture,
        task="multiclass_classification",
        outputs=[OutputColumn(name="label"), OutputColumn(name="prob")],
        metrics=metrics,
        device=device_name,
        details={"mode": "supervised", "vocabulary_size": len(vocabulary)},
        extra_files={served.VOCABULARY_FILE: json.dumps(vocabulary).encode()},
    )


def _accuracy(
    network: Any,
    data: TrainingData,
    index: dict[str, int],
    architecture: dict[str, Any],
    device: Any,
) -> dict[str, float]:
    import torch
    from cairn.builtins.blazingtext import token_ids

    prefix, x, y = (
        ("validation", data.x_validation, data.y_validation)
        if data.x_validation is not None
        else ("train", data.x_train, data.y_train)
    )
    ids, offsets = token_ids(
        [str(t) for t in x[:, 0]], index, architecture["buckets"], architecture["word_ngrams"]
    )
    network.eval()
    with torch.inference_mode():
        logits = network(torch.from_numpy(ids).to(device), torch.from_numpy(offsets).to(device))
    predicted = logits.argmax(dim=-1).cpu().numpy()
    return {f"{prefix}:accuracy": float(np.mean(predicted == np.asarray(y)))}
