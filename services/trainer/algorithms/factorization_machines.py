"""Factorization Machines (SageMaker's `factorization-machines`): sparse interactions, in torch.

SageMaker trains on recordIO-protobuf sparse vectors; here a table's category columns are the
sparse one-hot blocks (see `cairn.builtins.factorization_machines`), so `feature_dim` is derived
from the data (given, it must match). The per-part learning rates and weight decays keep their
SageMaker names and defaults; they drive Adam parameter groups.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from cairn.artifacts import OutputColumn
from pydantic import Field

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    InvalidHyperparameters,
    TrainedModel,
    TrainingContext,
    classification_metrics,
    ensure_not_stopped,
    regression_metrics,
)
from services.trainer.algorithms.torch_support import TORCH
from services.trainer.features import LabelMode, TrainingData


class FactorizationMachinesHyperparameters(Hyperparameters):
    num_factors: int = Field(ge=1, le=1000)
    predictor_type: Literal["binary_classifier", "regressor"]
    feature_dim: int | None = Field(default=None, ge=1)
    epochs: int = Field(default=1, ge=1, le=10_000)
    mini_batch_size: int = Field(default=1000, ge=1, le=1_000_000)
    bias_lr: float = Field(default=0.1, ge=0, le=10)
    linear_lr: float = Field(default=0.001, ge=0, le=10)
    factors_lr: float = Field(default=0.0001, ge=0, le=10)
    bias_wd: float = Field(default=0.01, ge=0, le=10)
    linear_wd: float = Field(default=0.001, ge=0, le=10)
    factors_wd: float = Field(default=0.00001, ge=0, le=10)
    factors_init_sigma: float = Field(default=0.001, gt=0, le=10)
    seed: int = 0


class FactorizationMachines(Algorithm[FactorizationMachinesHyperparameters]):
    name = "factorization-machines"
    hyperparameters_model = FactorizationMachinesHyperparameters
    requires = TORCH

    def label_mode(self, hyperparameters: FactorizationMachinesHyperparameters) -> LabelMode:
        return "classes" if hyperparameters.predictor_type == "binary_classifier" else "values"

    def train(
        self,
        data: TrainingData,
        hyperparameters: FactorizationMachinesHyperparameters,
        ctx: TrainingContext,
    ) -> TrainedModel:
        import torch
        from cairn.builtins import factorization_machines as served

        from services.trainer.algorithms import torch_support as ts

        hp = hyperparameters
        classifier = hp.predictor_type == "binary_classifier"
        if classifier and len(data.class_labels or []) != 2:
            raise InvalidHyperparameters(
                f"predictor_type binary_classifier needs 2 classes; the label has "
                f"{data.class_labels}"
            )
        architecture = _architecture(data, hp)
        _, width = served.layout(architecture)
        if hp.feature_dim is not None and hp.feature_dim != width:
            raise InvalidHyperparameters(
                f"feature_dim={hp.feature_dim} but the data encodes to {width} sparse features"
            )
        device, device_name = ts.torch_device(ctx)
        rng = ts.seed_everything(hp.seed)
        network: Any = served.build(architecture).to(device)
        optimizer = torch.optim.Adam(
            [
                {"params": [network.bias], "lr": hp.bias_lr, "weight_decay": hp.bias_wd},
                {
                    "params": network.linear.parameters(),
                    "lr": hp.linear_lr,
                    "weight_decay": hp.linear_wd,
                },
                {
                    "params": network.factors.parameters(),
                    "lr": hp.factors_lr,
                    "weight_decay": hp.factors_wd,
                },
            ]
        )
        indices, values = (
            torch.from_numpy(part).to(device)
            for part in served.sparse_features(data.x_train, architecture)
        )
        assert data.y_train is not None
        target = torch.from_numpy(data.y_train.astype(np.float32)).to(device)
        loss_fn = torch.nn.BCEWithLogitsLoss() if classifier else torch.nn.MSELoss()
        metrics: dict[str, float] = {}
        for epoch in ts.epochs(ctx, hp.epochs):
            network.train()
            for batch in ts.minibatches(len(target), hp.mini_batch_size, rng):
                rows = torch.from_numpy(batch).to(device)
                optimizer.zero_grad()
                loss = loss_fn(network(indices[rows], values[rows]), target[rows])
                loss.backward()
                optimizer.step()
            metrics = _metrics(network, data, architecture, classifier, device)
            ctx.progress(epoch, hp.epochs, metrics)
        ensure_not_stopped(ctx)
        outputs = [OutputColumn(name="score")]
        if classifier:
            outputs.append(OutputColumn(name="predicted_label", dtype="int"))
        return ts.torch_model(
            network,
            architecture,
            task="binary_classification" if classifier else "regression",
            outputs=outputs,
            metrics=metrics,
            device=device_name,
            details={"feature_dim": width, "num_factors": hp.num_factors},
        )


def _architecture(data: TrainingData, hp: FactorizationMachinesHyperparameters) -> dict[str, Any]:
    columns: list[dict[str, Any]] = []
    for j, column in enumerate(data.inputs):
        if column.dtype == "category":
            columns.append({"kind": "category", "size": len(column.categories or [])})
        else:
            x = data.x_train[:, j].astype(np.float64)
            mean = float(np.nanmean(x)) if np.isfinite(x).any() else 0.0
            std = float(np.nanstd(x)) if np.isfinite(x).any() else 1.0
            columns.append({"kind": "number", "mean": mean, "std": std if std > 0 else 1.0})
    return {
        "columns": columns,
        "num_factors": hp.num_factors,
        "predictor_type": hp.predictor_type,
        "factors_init_sigma": hp.factors_init_sigma,
    }


def _metrics(
    network: Any, data: TrainingData, architecture: dict[str, Any], classifier: bool, device: Any
) -> dict[str, float]:
    """SageMaker's names: binary_classification_accuracy / _cross_entropy, or rmse."""
    import torch
    from cairn.builtins.factorization_machines import sparse_features

    prefix, x, y = (
        ("validation", data.x_validation, data.y_validation)
        if data.x_validation is not None
        else ("train", data.x_train, data.y_train)
    )
    assert y is not None
    network.eval()
    with torch.inference_mode():
        indices, values = (torch.from_numpy(p).to(device) for p in sparse_features(x, architecture))
        raw = network(indices, values).cpu().numpy().astype(np.float64)
    if not classifier:
        return regression_metrics(prefix, y, raw)
    probability = 1.0 / (1.0 + np.exp(-raw))
    named = classification_metrics(prefix, y, probability, 2)
    metrics = {
        f"{prefix}:binary_classification_accuracy": named[f"{prefix}:accuracy"],
        f"{prefix}:binary_classification_cross_entropy": named[f"{prefix}:logloss"],
    }
    if f"{prefix}:auc" in named:
        metrics[f"{prefix}:auc"] = named[f"{prefix}:auc"]
    return metrics
