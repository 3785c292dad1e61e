"""IP Insights (SageMaker's `ip-insights`): usual and unusual (entity, IPv4) pairs, in torch.

The train channel's first two columns are the entity and the address (SageMaker's headerless
CSV has exactly these two). Positives are the observed pairs; negatives are the same entities with
random addresses and with addresses shuffled between rows (SageMaker's two sampling rates). The
network itself lives in `cairn.builtins.ip_insights`, shared with the servers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from cairn.artifacts import OutputColumn
from cairn.errors import InvalidInput
from pydantic import Field, model_validator

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.torch_support import TORCH
from services.trainer.features import LabelMode, TrainingData, prepare

MAX_PARAMETERS = 200_000_000


class IPInsightsHyperparameters(Hyperparameters):
    num_entity_vectors: int = Field(ge=1, le=50_000_000)
    vector_dim: int = Field(ge=4, le=4096)
    epochs: int = Field(default=10, ge=1, le=1000)
    learning_rate: float = Field(default=0.001, ge=1e-6, le=10.0)
    mini_batch_size: int = Field(default=10_000, ge=1, le=500_000)
    num_ip_encoder_layers: int = Field(default=1, ge=0, le=100)
    random_negative_sampling_rate: int = Field(default=1, ge=0, le=500)
    shuffled_negative_sampling_rate: int = Field(default=1, ge=0, le=500)
    weight_decay: float = Field(default=0.0, ge=0.0, le=10.0)
    seed: int = 0

    @model_validator(mode="after")
    def _fits_in_memory(self) -> IPInsightsHyperparameters:
        if self.num_entity_vectors * self.vector_dim > MAX_PARAMETERS:
            raise ValueError(
                f"num_entity_vectors * vector_dim exceeds {MAX_PARAMETERS:,} parameters"
            )
        if self.random_negative_sampling_rate + self.shuffled_negative_sampling_rate == 0:
            raise ValueError("at least one negative sampling rate must be positive")
        return self


class IPInsights(Algorithm[IPInsightsHyperparameters]):
    name = "ip-insights"
    hyperparameters_model = IPInsightsHyperparameters
    requires = TORCH

    def label_mode(self, hyperparameters: IPInsightsHyperparameters) -> LabelMode:
        return "none"

    def prepare(
        self,
        train: pd.DataFrame,
        validation: pd.DataFrame | None,
        *,
        label_column: str | None,
        hyperparameters: IPInsightsHyperparameters,
    ) -> TrainingData:
        if train.shape[1] < 2:
            raise InvalidInput("ip-insights needs two columns: entity, IPv4 address")
        columns = list(train.columns[:2])

        def pairs(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[columns].astype(str)

        return prepare(
            pairs(train),
            None if validation is None else pairs(validation),
            label_column=None,
            mode="none",
            text_inputs=True,
        )

    def train(
        self, data: TrainingData, hyperparameters: IPInsightsHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        import torch
        from cairn.builtins import ip_insights as served

        from services.trainer.algorithms import torch_support as ts

        hp = hyperparameters
        device, device_name = ts.torch_device(ctx)
        rng = ts.seed_everything(hp.seed)
        architecture = {
            "num_entity_vectors": hp.num_entity_vectors,
            "vector_dim": hp.vector_dim,
            "num_ip_encoder_layers": hp.num_ip_encoder_layers,
        }
        network = served.build(architecture, sparse=True).to(device)
        optimizers = _optimizers(network, hp)
        entities = served.entity_ids(data.x_train[:, 0], hp.num_entity_vectors)
        addresses = served.ip_ids(data.x_train[:, 1])
        loss_fn = torch.nn.BCEWithLogitsLoss()
        metrics: dict[str, float] = {}
        for epoch in ts.epochs(ctx, hp.epochs):
            network.train()
            total, batches = 0.0, 0
            for index in ts.minibatches(len(entities), hp.mini_batch_size, rng):
                e, a, y = _with_negatives(entities[index], addresses[index], hp, rng)
                for optimizer in optimizers:
                    optimizer.zero_grad()
                logits = network(torch.from_numpy(e).to(device), torch.from_numpy(a).to(device))
                loss = loss_fn(logits, torch.from_numpy(y).to(device))
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
                total, batches = total + loss.item(), batches + 1
            metrics = {"train:binary_cross_entropy": total / max(batches, 1)}
            if data.x_validation is not None:
                metrics["validation:discriminator_auc"] = _auc(network, data, hp, device)
            ctx.progress(epoch, hp.epochs, metrics)
        ensure_not_stopped(ctx)
        return ts.torch_model(
            network,
            architecture,
            task="anomaly_detection",
            outputs=[OutputColumn(name="dot_product")],
            metrics=metrics,
            device=device_name,
            details={"score": "dot_product: higher = more usual pair; low = anomalous"},
        )


def _optimizers(network: Any, hp: IPInsightsHyperparameters) -> list[Any]:
    """Sparse Adam for the embedding tables (only looked-up rows move), Adam for the encoder.

    weight_decay applies to the encoder: sparse Adam has none, and decaying every row of a
    hashed table each step would cost what the sparse update saves.
    """
    import torch

    optimizers: list[Any] = [
        torch.optim.SparseAdam([network.entity.weight, network.ip.weight], lr=hp.learning_rate)
    ]
    dense = list(network.encoder.parameters())
    if dense:
        optimizers.append(
            torch.optim.Adam(dense, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        )
    return optimizers


def _with_negatives(
    entities: npt.NDArray[np.int64],
    addresses: npt.NDArray[np.int64],
    hp: IPInsightsHyperparameters,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The positives plus random-address and shuffled-address negatives, with 1/0 labels."""
    from cairn.builtins.ip_insights import ip_ids, random_addresses

    parts_e, parts_a = [entities], [addresses]
    for _ in range(hp.random_negative_sampling_rate):
        parts_e.append(entities)
        parts_a.append(ip_ids(random_addresses(len(entities), rng)))
    for _ in range(hp.shuffled_negative_sampling_rate):
        parts_e.append(entities)
        parts_a.append(addresses[rng.permutation(len(addresses))])
    labels = np.zeros(len(entities) * len(parts_e), dtype=np.float32)
    labels[: len(entities)] = 1.0
    return np.concatenate(parts_e), np.concatenate(parts_a), labels


def _auc(network: Any, data: TrainingData, hp: IPInsightsHyperparameters, device: Any) -> float:
    """How well the dot product tells validation pairs from random-address pairs."""
    import torch
    from cairn.builtins.ip_insights import entity_ids, ip_ids, random_addresses
    from sklearn.metrics import roc_auc_score

    assert data.x_validation is not None
    rng = np.random.default_rng(hp.seed + 1)
    entities = entity_ids(data.x_validation[:, 0], hp.num_entity_vectors)
    real = ip_ids(data.x_validation[:, 1])
    fake = ip_ids(random_addresses(len(entities), rng))
    network.eval()
    with torch.inference_mode():
        e = torch.from_numpy(np.concatenate([entities, entities])).to(device)
        a = torch.from_numpy(np.concatenate([real, fake])).to(device)
        scores = network(e, a).cpu().numpy()
    labels = np.r_[np.ones(len(entities)), np.zeros(len(entities))]
    return float(roc_auc_score(labels, scores))
