"""Object2Vec (SageMaker's `object2vec`): embeddings of token-sequence pairs and their relation.

Input is SageMaker's JSON Lines, `{"label": 1, "in0": [ids], "in1": [ids]}` a line; token ids
run from 0 to the encoder's vocab size - 1. `output_layer=softmax` learns `num_classes` labels
(cross entropy), `mean_squared_error` a real-valued score.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from cairn.artifacts import OutputColumn
from cairn.errors import InvalidInput
from pydantic import Field, field_validator

from services.trainer.algorithms.base import (
    Hyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.deep_inputs import (
    Channels,
    FileAlgorithm,
    json_lines,
    make_optimizer,
    require,
    run_epochs,
)
from services.trainer.algorithms.torch_support import (
    TORCH,
    minibatches,
    seed_everything,
    torch_device,
    torch_model,
)

Network = Literal["hcnn", "bilstm", "pooled_embedding"]
COMPARATORS = ("hadamard", "concat", "abs_diff")


class Object2VecHyperparameters(Hyperparameters):
    enc0_max_seq_len: int = Field(ge=1, le=5000)
    enc0_vocab_size: int = Field(ge=2, le=3_000_000)
    enc1_max_seq_len: int | None = Field(default=None, ge=1, le=5000)
    enc1_vocab_size: int | None = Field(default=None, ge=2, le=3_000_000)
    enc0_network: Network = "hcnn"
    enc1_network: Network | Literal["enc0"] = "enc0"
    enc0_token_embedding_dim: int = Field(default=300, ge=2, le=1000)
    enc1_token_embedding_dim: int = Field(default=300, ge=2, le=1000)
    enc_dim: int = Field(default=4096, ge=4, le=10_000)
    tied_token_embedding_weight: bool = False
    comparator_list: str = "hadamard, concat, abs_diff"
    mlp_dim: int = Field(default=512, ge=2, le=10_000)
    mlp_layers: int = Field(default=2, ge=1, le=10)
    mlp_activation: Literal["tanh", "relu", "linear"] = "linear"
    output_layer: Literal["softmax", "mean_squared_error"] = "softmax"
    num_classes: int = Field(default=2, ge=2, le=30)
    epochs: int = Field(default=30, ge=1, le=100)
    mini_batch_size: int = Field(default=32, ge=1, le=10_000)
    learning_rate: float = Field(default=0.0004, gt=0, le=1.0)
    optimizer: Literal["adam", "adagrad", "adadelta", "sgd", "rmsprop"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0, le=10_000)
    dropout: float = Field(default=0.0, ge=0, le=1.0)
    early_stopping_patience: int | None = Field(default=None, ge=1, le=5)
    seed: int = 0

    @field_validator("comparator_list")
    @classmethod
    def _known_comparators(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(COMPARATORS))
        if not names or unknown:
            raise ValueError(f"comparators must come from {list(COMPARATORS)} (got {unknown})")
        return ", ".join(names)


def architecture(hp: Object2VecHyperparameters) -> dict[str, Any]:
    """The network's JSON config: encoder 1 defaults to encoder 0's settings (SageMaker's rule)."""
    return {
        "enc0_max_seq_len": hp.enc0_max_seq_len,
        "enc0_vocab_size": hp.enc0_vocab_size,
        "enc0_network": hp.enc0_network,
        "enc0_token_embedding_dim": hp.enc0_token_embedding_dim,
        "enc1_max_seq_len": hp.enc1_max_seq_len or hp.enc0_max_seq_len,
        "enc1_vocab_size": hp.enc1_vocab_size or hp.enc0_vocab_size,
        "enc1_network": hp.enc0_network if hp.enc1_network == "enc0" else hp.enc1_network,
        "enc1_token_embedding_dim": hp.enc1_token_embedding_dim,
        "enc_dim": hp.enc_dim,
        "tied_token_embedding_weight": hp.tied_token_embedding_weight,
        "comparator_list": [name.strip() for name in hp.comparator_list.split(",")],
        "mlp_dim": hp.mlp_dim,
        "mlp_layers": hp.mlp_layers,
        "mlp_activation": hp.mlp_activation,
        "dropout": hp.dropout,
        "output_layer": hp.output_layer,
        "n_outputs": hp.num_classes if hp.output_layer == "softmax" else 1,
    }


class Object2Vec(FileAlgorithm[Object2VecHyperparameters]):
    name = "object2vec"
    hyperparameters_model = Object2VecHyperparameters
    requires = TORCH

    def train_files(
        self, channels: Channels, hyperparameters: Object2VecHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        import torch
        from cairn.builtins.object2vec import build_network

        hp = hyperparameters
        arch = architecture(hp)
        if hp.tied_token_embedding_weight and (
            arch["enc0_vocab_size"] != arch["enc1_vocab_size"]
            or hp.enc0_token_embedding_dim != hp.enc1_token_embedding_dim
        ):
            raise InvalidInput("tied_token_embedding_weight needs equal vocabularies and dims")
        device, device_name = torch_device(ctx)
        rng = seed_everything(hp.seed)
        train = _tensors(json_lines(require(channels, "train", self.name)), arch, "train")
        evaluation = "validation" if "validation" in channels else "train"
        held_out = (
            _tensors(json_lines(channels["validation"]), arch, "validation")
            if "validation" in channels
            else train
        )
        network = build_network(arch).to(device)
        optimizer = make_optimizer(
            hp.optimizer, network.parameters(), hp.learning_rate, 0.9, hp.weight_decay
        )
        classify = hp.output_layer == "softmax"
        loss_fn = torch.nn.CrossEntropyLoss() if classify else torch.nn.MSELoss()

        def loss_of(batch: tuple[Any, Any, Any]) -> Any:
            in0, in1, label = (tensor.to(device) for tensor in batch)
            output = network(in0, in1)
            return loss_fn(output, label) if classify else loss_fn(output[:, 0], label)

        def train_epoch(epoch: int) -> dict[str, float]:
            network.train()
            total = 0.0
            for rows in minibatches(len(train[0]), hp.mini_batch_size, rng):
                loss = loss_of(tuple(tensor[rows] for tensor in train))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            return {"train:loss": total / len(train[0])}

        def evaluate() -> dict[str, float]:
            network.eval()
            with torch.no_grad():
                in0, in1, label = (tensor.to(device) for tensor in held_out)
                output = network(in0, in1)
            if classify:
                return {
                    f"{evaluation}:cross_entropy": float(loss_fn(output, label)),
                    f"{evaluation}:accuracy": float((output.argmax(1) == label).float().mean()),
                }
            return {f"{evaluation}:mean_squared_error": float(loss_fn(output[:, 0], label))}

        watch = f"{evaluation}:accuracy" if classify else f"{evaluation}:mean_squared_error"
        metrics = run_epochs(
            ctx,
            hp.epochs,
            train_epoch,
            evaluate,
            patience=hp.early_stopping_patience,
            watch=watch,
            higher_is_better=classify,
        )
        ensure_not_stopped(ctx)
        outputs = (
            [OutputColumn(name=f"score_{k}") for k in range(hp.num_classes)]
            if classify
            else [OutputColumn(name="score")]
        )
        return torch_model(
            network,
            arch,
            task="multiclass_classification" if classify else "regression",
            outputs=outputs,
            metrics=metrics,
            device=device_name,
            details={"rows": len(train[0])},
        )


def _tensors(records: list[dict[str, Any]], arch: dict[str, Any], channel: str) -> tuple[Any, ...]:
    """(in0, in1, label) tensors; a record without both inputs or a label is an error."""
    import torch
    from cairn.builtins.object2vec import pad
    from cairn.builtins.structured import int_list

    for number, record in enumerate(records, start=1):
        if not {"in0", "in1", "label"} <= set(record):
            raise InvalidInput(f"{channel} record {number} needs in0, in1 and label")
    in0 = pad(
        [int_list(r["in0"], "in0") for r in records],
        arch["enc0_max_seq_len"],
        arch["enc0_vocab_size"],
        "in0",
    )
    in1 = pad(
        [int_list(r["in1"], "in1") for r in records],
        arch["enc1_max_seq_len"],
        arch["enc1_vocab_size"],
        "in1",
    )
    labels = np.asarray([r["label"] for r in records], dtype=np.float64)
    if arch["output_layer"] == "softmax":
        if not np.all((labels >= 0) & (labels < arch["n_outputs"]) & (labels == labels.round())):
            raise InvalidInput(f"{channel} labels must be integers in 0..{arch['n_outputs'] - 1}")
        return in0, in1, torch.tensor(labels, dtype=torch.long)
    return in0, in1, torch.tensor(labels, dtype=torch.float32)
