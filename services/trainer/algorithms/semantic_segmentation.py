"""Semantic segmentation (SageMaker's `semantic-segmentation`): a class for every pixel.

Input is SageMaker's layout: images in `train` (and `validation`), and in `train_annotation`
(`validation_annotation`) a PNG of class indices for each, with the same file name stem; pixel
value 255 means "ignore". The network is Cairn's small U-Net trained from scratch, not
SageMaker's FCN/PSP/DeepLab on a pretrained ResNet (no weights can be downloaded here).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from cairn.artifacts import OutputColumn
from cairn.errors import InvalidInput
from pydantic import Field, model_validator

from services.trainer.algorithms.base import (
    Hyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.deep_inputs import (
    IMAGE_SUFFIXES,
    Channels,
    FileAlgorithm,
    decode_image,
    decode_mask,
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

IGNORE = 255


class SemanticSegmentationHyperparameters(Hyperparameters):
    num_classes: int = Field(ge=2, le=254)
    num_training_samples: int = Field(ge=1)
    crop_size: int = Field(default=240, ge=16, le=1024)
    epochs: int = Field(default=10, ge=1, le=1000)
    learning_rate: float = Field(default=0.001, gt=0, le=1)
    mini_batch_size: int = Field(default=16, ge=1, le=10_000)
    optimizer: Literal["sgd", "adam", "adagrad", "rmsprop"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, le=1)
    weight_decay: float = Field(default=0.0001, ge=0, le=1)
    use_pretrained_model: Literal[0] = 0
    early_stopping: bool = False
    early_stopping_patience: int = Field(default=4, ge=1)
    base_width: int = Field(default=16, ge=4, le=256, description="Cairn's: U-Net channels.")
    depth: int = Field(default=3, ge=1, le=5, description="Cairn's: U-Net down-sampling steps.")
    seed: int = 0

    @model_validator(mode="after")
    def _crop_fits_depth(self) -> SemanticSegmentationHyperparameters:
        if self.crop_size % 2**self.depth:
            raise ValueError(f"crop_size must be a multiple of 2**depth ({2**self.depth})")
        return self


def _stem(path: str) -> str:
    return path.rsplit(".", 1)[0]


def segmentation_set(channels: Channels, name: str, side: int, num_classes: int) -> Any:
    """(images, masks) tensors: each image paired with the annotation of the same stem."""
    import torch

    annotations = require(channels, f"{name}_annotation", "semantic-segmentation")
    masks_by_stem = {_stem(path): data for path, data in annotations.with_suffix(".png").items()}
    images, masks = [], []
    for path, data in channels[name].with_suffix(*IMAGE_SUFFIXES).items():
        if _stem(path) not in masks_by_stem:
            raise InvalidInput(f"{name}/{path} has no annotation PNG in {name}_annotation")
        images.append(decode_image(data, (3, side, side), where=f"{name}/{path}"))
        mask = decode_mask(masks_by_stem[_stem(path)], (side, side), where=f"annotation {path}")
        if np.any((mask >= num_classes) & (mask != IGNORE)):
            raise InvalidInput(f"annotation {path}: class values must be < num_classes or 255")
        masks.append(mask)
    if not images:
        raise InvalidInput(f"channel {name!r} holds no images")
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def segmentation_scores(predicted: Any, truth: Any, num_classes: int) -> tuple[float, float]:
    """(mean IoU over classes present in truth or prediction, pixel accuracy), ignoring 255."""
    valid = truth != IGNORE
    ious = []
    for cls in range(num_classes):
        mine, theirs = (predicted == cls) & valid, (truth == cls) & valid
        union = int((mine | theirs).sum())
        if union:
            ious.append(int((mine & theirs).sum()) / union)
    accuracy = int(((predicted == truth) & valid).sum()) / max(int(valid.sum()), 1)
    return float(np.mean(ious)) if ious else 0.0, accuracy


class SemanticSegmentation(FileAlgorithm[SemanticSegmentationHyperparameters]):
    name = "semantic-segmentation"
    hyperparameters_model = SemanticSegmentationHyperparameters
    requires = TORCH
    channels = ("train", "validation", "train_annotation", "validation_annotation")

    def train_files(
        self,
        channels: Channels,
        hyperparameters: SemanticSegmentationHyperparameters,
        ctx: TrainingContext,
    ) -> TrainedModel:
        import torch
        from cairn.builtins.semantic_segmentation import build_network

        hp = hyperparameters
        require(channels, "train", self.name)
        x_train, y_train = segmentation_set(channels, "train", hp.crop_size, hp.num_classes)
        held = "validation" if "validation" in channels else "train"
        x_held, y_held = (
            segmentation_set(channels, held, hp.crop_size, hp.num_classes)
            if held == "validation"
            else (x_train, y_train)
        )
        arch = {
            "num_classes": hp.num_classes,
            "crop_size": hp.crop_size,
            "base_width": hp.base_width,
            "depth": hp.depth,
        }
        device, device_name = torch_device(ctx)
        rng = seed_everything(hp.seed)
        network = build_network(arch).to(device)
        optimizer = make_optimizer(
            hp.optimizer, network.parameters(), hp.learning_rate, hp.momentum, hp.weight_decay
        )
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)

        def train_epoch(epoch: int) -> dict[str, float]:
            network.train()
            total = 0.0
            for rows in minibatches(len(x_train), hp.mini_batch_size, rng):
                loss = loss_fn(network(x_train[rows].to(device)), y_train[rows].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            return {"train:loss": total / len(x_train)}

        def evaluate() -> dict[str, float]:
            network.eval()
            with torch.no_grad():
                predicted = torch.cat(
                    [
                        network(x_held[start : start + 64].to(device)).argmax(1).cpu()
                        for start in range(0, len(x_held), 64)
                    ]
                )
            miou, accuracy = segmentation_scores(predicted, y_held, hp.num_classes)
            return {f"{held}:mIOU": miou, f"{held}:pixel_accuracy": accuracy}

        metrics = run_epochs(
            ctx,
            hp.epochs,
            train_epoch,
            evaluate,
            patience=hp.early_stopping_patience if hp.early_stopping else None,
            watch=f"{held}:mIOU",
        )
        ensure_not_stopped(ctx)
        return torch_model(
            network,
            arch,
            task="custom",
            outputs=[OutputColumn(name="mask")],
            metrics=metrics,
            device=device_name,
            details={"images": len(x_train)},
        )
