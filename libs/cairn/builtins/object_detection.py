"""Object detection: a small convolutional backbone and a one-scale, YOLO-style grid head.

Each cell of a stride-8 grid predicts an objectness score, the box centre inside the cell, the
box size (both as fractions of the image) and the class. An image body gets SageMaker's answer,
`{"prediction": [[class_id, score, xmin, ymin, xmax, ymax], ...]}` with coordinates in 0..1;
`{"instances": [{"b64": ...}]}` gets `{"predictions": [{"prediction": [...]}, ...]}`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from cairn.builtins.structured import (
    IMAGE_TYPES,
    JSON,
    StructuredModel,
    decode_image,
    image_from_instance,
    instances,
)

STRIDE = 8
MIN_SCORE = 0.05
MAX_DETECTIONS = 100


def build_network(a: dict[str, Any]) -> Any:
    from torch import nn

    def block(inputs: int, outputs: int) -> list[nn.Module]:
        return [
            nn.Conv2d(inputs, outputs, 3, 1, 1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, 3, 2, 1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
        ]

    width = int(a["base_width"])
    return nn.Sequential(
        *block(3, width),
        *block(width, 2 * width),
        *block(2 * width, 4 * width),
        nn.Conv2d(4 * width, 4 * width, 3, 1, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4 * width, 5 + int(a["num_classes"]), 1),
    )


def box_iou(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """IoU of every box in `a` (n, 4) with every box in `b` (m, 4), corners as xmin..ymax."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.clip(high - low, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - overlap
    result: npt.NDArray[Any] = overlap / np.maximum(union, 1e-9)
    return result


def nms(boxes: npt.NDArray[Any], scores: npt.NDArray[Any], threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = list(np.argsort(-scores))
    keep: list[int] = []
    while order:
        best = order.pop(0)
        keep.append(int(best))
        if order:
            overlaps = box_iou(boxes[[best]], boxes[order])[0]
            order = [i for i, o in zip(order, overlaps, strict=True) if o <= threshold]
    return keep


def decode(output: Any, nms_threshold: float) -> list[list[list[float]]]:
    """Per image: [class_id, score, xmin, ymin, xmax, ymax] rows, best first."""
    import torch

    batch, _, grid_h, grid_w = output.shape
    objectness = torch.sigmoid(output[:, 0])
    offsets = torch.sigmoid(output[:, 1:3])
    sizes = torch.sigmoid(output[:, 3:5])
    classes = torch.softmax(output[:, 5:], dim=1)
    rows = torch.arange(grid_h, dtype=torch.float32)[:, None].expand(grid_h, grid_w)
    cols = torch.arange(grid_w, dtype=torch.float32)[None, :].expand(grid_h, grid_w)
    centre_x = (cols + offsets[:, 0]) / grid_w
    centre_y = (rows + offsets[:, 1]) / grid_h
    boxes = torch.stack(
        [
            centre_x - sizes[:, 0] / 2,
            centre_y - sizes[:, 1] / 2,
            centre_x + sizes[:, 0] / 2,
            centre_y + sizes[:, 1] / 2,
        ],
        dim=-1,
    ).clamp(0, 1)
    class_score, class_id = classes.max(dim=1)
    score = objectness * class_score
    answers = []
    for image in range(batch):
        flat_scores = score[image].reshape(-1).numpy()
        flat_boxes = boxes[image].reshape(-1, 4).numpy()
        flat_ids = class_id[image].reshape(-1).numpy()
        candidates = np.flatnonzero(flat_scores >= MIN_SCORE)
        detections: list[list[float]] = []
        for cls in np.unique(flat_ids[candidates]):
            mine = candidates[flat_ids[candidates] == cls]
            for kept in nms(flat_boxes[mine], flat_scores[mine], nms_threshold):
                index = mine[kept]
                detections.append(
                    [float(cls), float(flat_scores[index]), *map(float, flat_boxes[index])]
                )
        detections.sort(key=lambda row: -row[1])
        answers.append(detections[:MAX_DETECTIONS])
    return answers


class ObjectDetectionModel(StructuredModel):
    accepts = frozenset({JSON, *IMAGE_TYPES})

    @staticmethod
    def build(architecture: dict[str, Any]) -> Any:
        return build_network(architecture)

    def detect(self, images: list[bytes]) -> list[list[list[float]]]:
        import torch

        side = self.architecture["image_shape"]
        batch = torch.from_numpy(
            np.stack([decode_image(image, [3, side, side]) for image in images])
        )
        return decode(self.network(batch), self.architecture["nms_threshold"])

    def answer_image(self, body: bytes, accept: str | None) -> tuple[bytes, str]:
        return json.dumps({"prediction": self.detect([body])[0]}).encode(), JSON

    def answer(self, payload: Any) -> Any:
        images = [image_from_instance(item) for item in instances(payload, limit=64)]
        return {"predictions": [{"prediction": rows} for rows in self.detect(images)]}
