"""Image classification: a ResNet of basic blocks, trained from scratch (no pretrained weights).

`num_layers` is SageMaker's ResNet depth: 18 and 34 are ImageNet-style (four stages from 64
channels), 20, 32, 44, 56 and 110 (and the smaller 8 and 14) CIFAR-style (three stages from 16
channels). The bottleneck depths (50, 101, 152, 200) are refused.
An image body (`application/x-image`, PNG or JPEG) gets SageMaker's answer, the JSON list of
class probabilities; `{"instances": [{"b64": ...}]}` gets `{"predictions": [[...], ...]}`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cairn.builtins.structured import (
    IMAGE_TYPES,
    JSON,
    StructuredModel,
    decode_image,
    image_from_instance,
    instances,
)
from cairn.errors import InvalidInput

IMAGENET_DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)  # SageMaker's 20..110, and two smaller


def stages_of(depth: int) -> tuple[list[int], list[int]]:
    """(blocks per stage, channels per stage) of a ResNet depth; ValueError names the valid."""
    if depth in IMAGENET_DEPTHS:
        return IMAGENET_DEPTHS[depth], [64, 128, 256, 512]
    if depth in CIFAR_DEPTHS:
        n = (depth - 2) // 6
        return [n, n, n], [16, 32, 64]
    raise ValueError(f"num_layers must be one of {sorted([*IMAGENET_DEPTHS, *CIFAR_DEPTHS])}")


def build_network(a: dict[str, Any]) -> Any:
    from torch import nn

    class Block(nn.Module):
        def __init__(self, inputs: int, outputs: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(inplace=True),
                nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False),
                nn.BatchNorm2d(outputs),
            )
            self.shortcut: nn.Module = nn.Identity()
            if stride != 1 or inputs != outputs:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
                )
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: Any) -> Any:
            return self.relu(self.body(x) + self.shortcut(x))

    blocks, widths = stages_of(int(a["num_layers"]))
    layers: list[nn.Module] = [
        nn.Conv2d(a["image_shape"][0], widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    inputs = widths[0]
    for stage, (count, width) in enumerate(zip(blocks, widths, strict=True)):
        for index in range(count):
            layers.append(Block(inputs, width, 2 if stage > 0 and index == 0 else 1))
            inputs = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, a["num_classes"])]
    return nn.Sequential(*layers)


class ImageClassificationModel(StructuredModel):
    accepts = frozenset({JSON, *IMAGE_TYPES})

    @staticmethod
    def build(architecture: dict[str, Any]) -> Any:
        return build_network(architecture)

    def probabilities(self, images: list[bytes]) -> list[list[float]]:
        import torch

        shape = self.architecture["image_shape"]
        batch = torch.from_numpy(np.stack([decode_image(image, shape) for image in images]))
        probabilities: list[list[float]] = torch.softmax(self.network(batch), dim=1).tolist()
        return probabilities

    def answer_image(self, body: bytes, accept: str | None) -> tuple[bytes, str]:
        return json.dumps(self.probabilities([body])[0]).encode(), JSON

    def answer(self, payload: Any) -> Any:
        images = [image_from_instance(item) for item in instances(payload, limit=256)]
        if not images:
            raise InvalidInput("no images in the request")
        return {"predictions": self.probabilities(images)}

    def record_answers(self, records: list[Any], environment: dict[str, str]) -> list[Any]:
        """SageMaker's JSON Lines answer per image: `{"prediction": [p0, p1, ...]}`."""
        images = [image_from_instance(record) for record in records]
        return [{"prediction": p} for p in self.probabilities(images)]
