"""Image classification (SageMaker's `image-classification`): a ResNet trained from scratch.

Input is SageMaker's image format: a `train` channel of images with a `train_lst` channel (or an
`.lst` file in `train`) of `index <TAB> class <TAB> relative/path.png` lines, or images in one
folder per class (`cat/001.png`; classes numbered in sorted folder order). `validation` and
`validation_lst` likewise. No pretrained weights: they cannot be downloaded here.
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
    decode_image,
    labelled_images,
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


def parse_shape(value: str) -> tuple[int, int, int]:
    """SageMaker's `channels,height,width` (e.g. "3,224,224")."""
    try:
        channels, height, width = (int(part) for part in value.split(","))
    except ValueError:
        raise ValueError('image_shape must be "channels,height,width", e.g. "3,224,224"') from None
    if channels not in (1, 3) or not (8 <= height <= 1024 and 8 <= width <= 1024):
        raise ValueError("image_shape needs 1 or 3 channels and sides of 8..1024 pixels")
    return channels, height, width


class ImageClassificationHyperparameters(Hyperparameters):
    num_classes: int = Field(ge=2, le=10_000)
    num_training_samples: int = Field(ge=1)
    image_shape: str = "3,224,224"
    num_layers: int = 18
    epochs: int = Field(default=30, ge=1, le=1000)
    learning_rate: float = Field(default=0.1, gt=0, le=10)
    mini_batch_size: int = Field(default=32, ge=1, le=10_000)
    optimizer: Literal["sgd", "adam", "rmsprop", "nag"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, le=1)
    weight_decay: float = Field(default=0.0001, ge=0, le=1)
    lr_scheduler_factor: float = Field(default=0.1, gt=0, le=1)
    lr_scheduler_step: str = ""
    use_pretrained_model: Literal[0] = 0
    early_stopping: bool = False
    early_stopping_patience: int = Field(default=5, ge=1)
    seed: int = 0

    @field_validator("image_shape")
    @classmethod
    def _shape(cls, value: str) -> str:
        parse_shape(value)
        return value

    @field_validator("num_layers")
    @classmethod
    def _depth(cls, value: int) -> int:
        from cairn.builtins.image_classification import stages_of

        stages_of(value)
        return value

    @field_validator("lr_scheduler_step")
    @classmethod
    def _steps(cls, value: str) -> str:
        if value and not all(part.strip().isdigit() for part in value.split(",")):
            raise ValueError('lr_scheduler_step lists epochs, e.g. "10,20"')
        return value


def image_tensors(
    channels: Channels, name: str, shape: tuple[int, int, int], num_classes: int
) -> tuple[Any, Any, list[str] | None]:
    """(images, labels, class names) of the `name` channel and its `name_lst` manifest."""
    import torch

    pairs, names = labelled_images(channels[name], channels.get(f"{name}_lst"))
    if names is not None and len(names) != num_classes:
        raise InvalidInput(f"{name} has {len(names)} class folders; num_classes={num_classes}")
    labels = np.asarray([label for _, label in pairs])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise InvalidInput(f"{name}: class labels must lie in 0..num_classes-1 ({num_classes})")
    images = np.stack(
        [decode_image(data, shape, where=f"{name} image {i}") for i, (data, _) in enumerate(pairs)]
    )
    return torch.from_numpy(images), torch.from_numpy(labels), names


class ImageClassification(FileAlgorithm[ImageClassificationHyperparameters]):
    name = "image-classification"
    hyperparameters_model = ImageClassificationHyperparameters
    requires = TORCH
    channels = ("train", "validation", "train_lst", "validation_lst")

    def train_files(
        self,
        channels: Channels,
        hyperparameters: ImageClassificationHyperparameters,
        ctx: TrainingContext,
    ) -> TrainedModel:
        import torch
        from cairn.builtins.image_classification import build_network

        hp = hyperparameters
        require(channels, "train", self.name)
        shape = parse_shape(hp.image_shape)
        x_train, y_train, names = image_tensors(channels, "train", shape, hp.num_classes)
        if len(x_train) != hp.num_training_samples:
            ctx.log(f"num_training_samples={hp.num_training_samples}; train has {len(x_train)}")
        held = "validation" if "validation" in channels else "train"
        x_held, y_held, _ = (
            image_tensors(channels, held, shape, hp.num_classes)
            if held == "validation"
            else (x_train, y_train, None)
        )
        arch = {
            "num_layers": hp.num_layers,
            "image_shape": list(shape),
            "num_classes": hp.num_classes,
        }
        device, device_name = torch_device(ctx)
        rng = seed_everything(hp.seed)
        network = build_network(arch).to(device)
        optimizer = make_optimizer(
            hp.optimizer, network.parameters(), hp.learning_rate, hp.momentum, hp.weight_decay
        )
        milestones = [int(step) for step in hp.lr_scheduler_step.split(",") if step.strip()]
        schedule = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones, gamma=hp.lr_scheduler_factor
        )
        loss_fn = torch.nn.CrossEntropyLoss()

        def train_epoch(epoch: int) -> dict[str, float]:
            network.train()
            correct = 0
            for rows in minibatches(len(x_train), hp.mini_batch_size, rng):
                images, labels = x_train[rows].to(device), y_train[rows].to(device)
                logits = network(images)
                loss = loss_fn(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                correct += int((logits.argmax(1) == labels).sum())
            schedule.step()
            return {"train:accuracy": correct / len(x_train)}

        def evaluate() -> dict[str, float]:
            network.eval()
            correct = 0
            with torch.no_grad():
                for start in range(0, len(x_held), 256):
                    images = x_held[start : start + 256].to(device)
                    predicted = network(images).argmax(1).cpu()
                    correct += int((predicted == y_held[start : start + 256]).sum())
            return {f"{held}:accuracy": correct / len(x_held)}

        metrics = run_epochs(
            ctx,
            hp.epochs,
            train_epoch,
            evaluate,
            patience=hp.early_stopping_patience if hp.early_stopping else None,
            watch=f"{held}:accuracy",
        )
        ensure_not_stopped(ctx)
        labels = names or [str(k) for k in range(hp.num_classes)]
        return torch_model(
            network,
            arch,
            task="multiclass_classification",
            outputs=[OutputColumn(name=f"probability_{label}") for label in labels],
            metrics=metrics,
            device=device_name,
            details={"class_labels": labels, "images": len(x_train)},
        )
