"""Neural Topic Model (SageMaker's `ntm`): topics from word-count rows, in torch.

Input as SageMaker's: one row per document, one column per vocabulary word holding its count
(CSV, JSON Lines or Parquet). `encoder_layers` "auto" is SageMaker's default of two layers.
The metric each epoch is the loss per word (reconstruction + KL), lower is better, on the
validation channel when there is one.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from cairn.artifacts import OutputColumn
from pydantic import Field, field_validator

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    InvalidHyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.torch_support import TORCH
from services.trainer.features import LabelMode, TrainingData

Optimizer = Literal["adam", "adadelta", "sgd", "rmsprop", "adagrad"]


class NTMHyperparameters(Hyperparameters):
    num_topics: int = Field(ge=2, le=1000)
    feature_dim: int | None = Field(default=None, ge=1, le=1_000_000)
    mini_batch_size: int = Field(default=64, ge=1, le=10_000)
    epochs: int = Field(default=50, ge=1, le=100)
    encoder_layers: str = Field(default="auto", pattern=r"^(auto|\d+(,\d+)*)$")
    encoder_layers_activation: Literal["sigmoid", "tanh", "relu"] = "sigmoid"
    optimizer: Optimizer = "adadelta"
    learning_rate: float = Field(default=0.001, ge=1e-6, le=1.0)
    tolerance: float = Field(default=0.001, ge=1e-6, le=0.1)
    num_patience_epochs: int = Field(default=3, ge=1, le=10)
    batch_norm: bool = False
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    clip_gradient: float | None = Field(default=None, ge=1e-6)
    seed: int = 0

    @field_validator("encoder_layers")
    @classmethod
    def _widths_in_range(cls, value: str) -> str:
        if value != "auto" and not all(1 <= int(w) <= 10_000 for w in value.split(",")):
            raise ValueError("each encoder layer width must be 1..10000")
        return value


class NeuralTopicModel(Algorithm[NTMHyperparameters]):
    name = "ntm"
    hyperparameters_model = NTMHyperparameters
    requires = TORCH

    def label_mode(self, hyperparameters: NTMHyperparameters) -> LabelMode:
        return "none"

    def train(
        self, data: TrainingData, hyperparameters: NTMHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        import torch
        from cairn.builtins import ntm as served

        from services.trainer.algorithms import torch_support as ts

        hp = hyperparameters
        vocabulary = data.x_train.shape[1]
        if hp.feature_dim is not None and hp.feature_dim != vocabulary:
            raise InvalidHyperparameters(
                f"feature_dim={hp.feature_dim} but the rows have {vocabulary} word columns"
            )
        if any(column.dtype == "category" for column in data.inputs):
            raise InvalidHyperparameters("ntm takes word counts: every column must be a number")
        architecture = {
            "feature_dim": vocabulary,
            "num_topics": hp.num_topics,
            "encoder_layers": _widths(hp, vocabulary),
            "encoder_layers_activation": hp.encoder_layers_activation,
            "batch_norm": hp.batch_norm,
        }
        device, device_name = ts.torch_device(ctx)
        rng = ts.seed_everything(hp.seed)
        network = served.build(architecture).to(device)
        optimizer = ts.optimizer(
            hp.optimizer, network.parameters(), hp.learning_rate, hp.weight_decay
        )
        train_counts = _counts(data.x_train, device)
        held_out = _counts(data.x_validation, device) if data.x_validation is not None else None
        prefix = "validation" if held_out is not None else "train"
        best, waited = float("inf"), 0
        metrics: dict[str, float] = {}
        for epoch in ts.epochs(ctx, hp.epochs):
            network.train()
            for batch in ts.minibatches(len(train_counts), hp.mini_batch_size, rng):
                optimizer.zero_grad()
                reconstruction, kl = network(train_counts[torch.from_numpy(batch).to(device)])
                loss = (reconstruction + kl).mean()
                loss.backward()
                if hp.clip_gradient is not None:
                    torch.nn.utils.clip_grad_norm_(network.parameters(), hp.clip_gradient)
                optimizer.step()
            scored = held_out if held_out is not None else train_counts
            metrics = _loss_per_word(network, scored, prefix)
            ctx.progress(epoch, hp.epochs, metrics)
            total = metrics[f"{prefix}:total_loss"]
            if total < best - hp.tolerance:
                best, waited = total, 0
            else:
                waited += 1
                if waited >= hp.num_patience_epochs:
                    ctx.log(f"stopped after epoch {epoch}: total_loss did not improve")
                    break
        ensure_not_stopped(ctx)
        return ts.torch_model(
            network,
            architecture,
            task="topic_model",
            outputs=[OutputColumn(name="topic_weights")],
            metrics=metrics,
            device=device_name,
            details={"num_topics": hp.num_topics, "feature_dim": vocabulary},
        )


def _widths(hp: NTMHyperparameters, vocabulary: int) -> list[int]:
    if hp.encoder_layers != "auto":
        return [int(w) for w in hp.encoder_layers.split(",")]
    return [max(hp.num_topics * 3, min(1000, vocabulary // 2)), max(hp.num_topics * 2, 50)]


def _counts(x: Any, device: Any) -> Any:
    import torch

    counts = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0)
    if (counts < 0).any():
        from cairn.errors import InvalidInput

        raise InvalidInput("ntm takes word counts: a column holds a negative number")
    return torch.from_numpy(counts).to(device)


def _loss_per_word(network: Any, counts: Any, prefix: str) -> dict[str, float]:
    import torch

    network.eval()
    with torch.inference_mode():
        reconstruction, kl = network(counts)
    words = float(counts.sum()) or 1.0
    return {
        f"{prefix}:total_loss": float((reconstruction + kl).sum()) / words,
        f"{prefix}:recons_loss": float(reconstruction.sum()) / words,
        f"{prefix}:kld": float(kl.sum()) / words,
    }
