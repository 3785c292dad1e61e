"""Object detection (SageMaker's `object-detection`): boxes and classes, trained from scratch.

Input is SageMaker's image format with an `.lst` manifest (in `train_lst`, or an `.lst` file in
`train`): `index <TAB> A <TAB> B <TAB> [A-2 header fields] <TAB> objects <TAB> path`, where A is
the header width (2 or more), B the width of one object (5 or more: class_id, xmin, ymin, xmax,
ymax as fractions of the image; extra fields ignored). The network is Cairn's own small grid
detector, not SageMaker's SSD on VGG/ResNet (no pretrained weights can be downloaded here).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from cairn.artifacts import OutputColumn
from cairn.errors import InvalidInput
from pydantic import Field

from services.trainer.algorithms.base import (
    Hyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.deep_inputs import (
    Channels,
    FileAlgorithm,
    RawChannel,
    decode_image,
    image_bytes,
    lst_rows,
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

Boxes = list[npt.NDArray[np.float32]]  # per image: (objects, 5) rows of class, xmin..ymax


class ObjectDetectionHyperparameters(Hyperparameters):
    num_classes: int = Field(ge=1, le=1000)
    num_training_samples: int = Field(ge=1)
    image_shape: int = Field(default=300, ge=16, le=1024, multiple_of=8)
    epochs: int = Field(default=30, ge=1, le=1000)
    learning_rate: float = Field(default=0.001, gt=0, le=1)
    mini_batch_size: int = Field(default=32, ge=1, le=10_000)
    optimizer: Literal["sgd", "adam", "rmsprop", "adadelta"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, le=1)
    weight_decay: float = Field(default=0.0005, ge=0, le=1)
    nms_threshold: float = Field(default=0.45, gt=0, le=1)
    overlap_threshold: float = Field(default=0.5, gt=0, le=1)
    use_pretrained_model: Literal[0] = 0
    base_width: int = Field(default=32, ge=4, le=256, description="Cairn's: backbone channels.")
    early_stopping: bool = False
    early_stopping_patience: int = Field(default=5, ge=1)
    seed: int = 0


def detection_set(channel: RawChannel, manifest: RawChannel, side: int) -> tuple[Any, Boxes]:
    """Images (n, 3, side, side) and their boxes from SageMaker's detection `.lst` rows."""
    import torch

    images, boxes = [], []
    for number, (labels, path) in enumerate(lst_rows(manifest), start=1):
        header, width = (int(labels[0]), int(labels[1])) if len(labels) >= 2 else (0, 0)
        objects = labels[header:]
        if header < 2 or width < 5 or len(objects) % width:
            raise InvalidInput(f"{manifest.name} line {number}: bad detection header A/B")
        rows = np.asarray(objects, dtype=np.float32).reshape(-1, width)[:, :5]
        if len(rows) and (rows[:, 1:].min() < 0 or rows[:, 1:].max() > 1):
            raise InvalidInput(f"{manifest.name} line {number}: coordinates must be in 0..1")
        images.append(decode_image(image_bytes(channel, path), (3, side, side), where=path))
        boxes.append(rows)
    if not images:
        raise InvalidInput(f"{manifest.name}: the .lst manifest lists no images")
    return torch.from_numpy(np.stack(images)), boxes


def grid_targets(boxes: Boxes, grid: int, num_classes: int) -> Any:
    """(n, 6, grid, grid) targets: objectness, centre offset x/y, width, height, class."""
    import torch

    target = torch.zeros((len(boxes), 6, grid, grid))
    for image, rows in enumerate(boxes):
        for cls, xmin, ymin, xmax, ymax in rows:
            if not 0 <= int(cls) < num_classes:
                raise InvalidInput(f"class_id {int(cls)} is outside 0..num_classes-1")
            cx, cy = (xmin + xmax) / 2 * grid, (ymin + ymax) / 2 * grid
            col, row = min(int(cx), grid - 1), min(int(cy), grid - 1)
            target[image, :, row, col] = torch.tensor(
                [1.0, cx - col, cy - row, xmax - xmin, ymax - ymin, cls]
            )
    return target


def detection_loss(output: Any, target: Any) -> Any:
    import torch
    from torch.nn import functional

    positive = target[:, 0] > 0
    objectness = functional.binary_cross_entropy_with_logits(
        output[:, 0], target[:, 0], pos_weight=torch.tensor(5.0)
    )
    if not positive.any():
        return objectness
    geometry = torch.sigmoid(output[:, 1:5]).permute(0, 2, 3, 1)[positive]
    box = functional.l1_loss(geometry, target[:, 1:5].permute(0, 2, 3, 1)[positive])
    classes = output[:, 5:].permute(0, 2, 3, 1)[positive]
    return objectness + 5 * box + functional.cross_entropy(classes, target[:, 5][positive].long())


def mean_average_precision(
    detections: list[list[list[float]]], truth: Boxes, num_classes: int, threshold: float
) -> float:
    """VOC-style mAP: per class, the area under the all-point precision-recall curve."""
    from cairn.builtins.object_detection import box_iou

    precisions = []
    for cls in range(num_classes):
        truths = {i: rows[rows[:, 0] == cls, 1:] for i, rows in enumerate(truth)}
        total = sum(len(rows) for rows in truths.values())
        if total == 0:
            continue
        found = sorted(
            (
                (row[1], i, np.asarray(row[2:]))
                for i, rows in enumerate(detections)
                for row in rows
                if int(row[0]) == cls
            ),
            key=lambda item: -item[0],
        )
        used = {i: np.zeros(len(rows), dtype=bool) for i, rows in truths.items()}
        hits = []
        for _, image, box in found:
            candidates = truths[image]
            if len(candidates) == 0:
                hits.append(0)
                continue
            overlaps = box_iou(box[None, :], candidates)[0]
            best = int(overlaps.argmax())
            hit = overlaps[best] >= threshold and not used[image][best]
            used[image][best] |= hit
            hits.append(int(hit))
        if not hits:
            precisions.append(0.0)
            continue
        true_positives = np.cumsum(hits)
        precision = true_positives / np.arange(1, len(hits) + 1)
        recall = true_positives / total
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.diff(np.concatenate([[0.0], recall]))
        precisions.append(float((steps * envelope).sum()))
    return float(np.mean(precisions)) if precisions else 0.0


class ObjectDetection(FileAlgorithm[ObjectDetectionHyperparameters]):
    name = "object-detection"
    hyperparameters_model = ObjectDetectionHyperparameters
    requires = TORCH
    channels = ("train", "validation", "train_lst", "validation_lst")

    def train_files(
        self,
        channels: Channels,
        hyperparameters: ObjectDetectionHyperparameters,
        ctx: TrainingContext,
    ) -> TrainedModel:
        import torch
        from cairn.builtins.object_detection import STRIDE, build_network, decode

        hp = hyperparameters
        side, grid = hp.image_shape, hp.image_shape // STRIDE

        def load(name: str) -> tuple[Any, Boxes]:
            return detection_set(channels[name], channels.get(f"{name}_lst", channels[name]), side)

        require(channels, "train", self.name)
        x_train, boxes_train = load("train")
        held = "validation" if "validation" in channels else "train"
        x_held, boxes_held = load(held) if held == "validation" else (x_train, boxes_train)
        targets = grid_targets(boxes_train, grid, hp.num_classes)
        arch = {
            "num_classes": hp.num_classes,
            "image_shape": side,
            "base_width": hp.base_width,
            "nms_threshold": hp.nms_threshold,
        }
        device, device_name = torch_device(ctx)
        rng = seed_everything(hp.seed)
        network = build_network(arch).to(device)
        optimizer = make_optimizer(
            hp.optimizer, network.parameters(), hp.learning_rate, hp.momentum, hp.weight_decay
        )

        def train_epoch(epoch: int) -> dict[str, float]:
            network.train()
            total = 0.0
            for rows in minibatches(len(x_train), hp.mini_batch_size, rng):
                output = network(x_train[rows].to(device))
                loss = detection_loss(output, targets[rows].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            return {"train:loss": total / len(x_train)}

        def evaluate() -> dict[str, float]:
            network.eval()
            detections: list[list[list[float]]] = []
            with torch.no_grad():
                for start in range(0, len(x_held), 128):
                    output = network(x_held[start : start + 128].to(device)).cpu()
                    detections += decode(output, hp.nms_threshold)
            score = mean_average_precision(
                detections, boxes_held, hp.num_classes, hp.overlap_threshold
            )
            return {f"{held}:mAP": score}

        metrics = run_epochs(
            ctx,
            hp.epochs,
            train_epoch,
            evaluate,
            patience=hp.early_stopping_patience if hp.early_stopping else None,
            watch=f"{held}:mAP",
        )
        ensure_not_stopped(ctx)
        return torch_model(
            network,
            arch,
            task="custom",
            outputs=[OutputColumn(name="prediction")],
            metrics=metrics,
            device=device_name,
            details={"images": len(x_train)},
        )
