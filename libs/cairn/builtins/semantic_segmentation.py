"""Semantic segmentation: a small U-Net that labels every pixel with a class.

An image body with `Accept: image/png` gets SageMaker's answer: a PNG whose pixel values are
class indices, at the size of the image sent; any other Accept gets
`{"shape": [h, w], "mask": [[...]]}` (the gateway's default is JSON).
`{"instances": [{"b64": ...}]}` gets `{"predictions": [{"shape": ..., "mask": ...}]}`.
"""

from __future__ import annotations

import io
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
from cairn.errors import InvalidInput

PNG = "image/png"


def build_network(a: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    def double(inputs: int, outputs: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            width, depth = int(a["base_width"]), int(a["depth"])
            widths = [width * 2**level for level in range(depth + 1)]
            self.down = nn.ModuleList([double(3, widths[0])])
            self.down.extend(double(widths[i], widths[i + 1]) for i in range(depth))
            self.up = nn.ModuleList(
                nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)
            )
            self.merge = nn.ModuleList(double(2 * widths[i], widths[i]) for i in range(depth))
            self.classify = nn.Conv2d(widths[0], int(a["num_classes"]), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for index, layer in enumerate(self.down):
                x = layer(x if index == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for index in reversed(range(len(self.up))):
                x = self.merge[index](torch.cat([self.up[index](x), skips[index]], dim=1))
            return self.classify(x)  # type: ignore[no-any-return]

    return UNet()


def image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        width, height = Image.open(io.BytesIO(data)).size
    except (UnidentifiedImageError, OSError) as error:
        raise InvalidInput(f"the body is not a readable image ({error})") from None
    return height, width


def resize_mask(mask: npt.NDArray[Any], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    from PIL import Image

    image = Image.fromarray(mask.astype(np.uint8), mode="L")
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.NEAREST))


class SemanticSegmentationModel(StructuredModel):
    accepts = frozenset({JSON, *IMAGE_TYPES})

    @staticmethod
    def build(architecture: dict[str, Any]) -> Any:
        return build_network(architecture)

    def masks(self, images: list[bytes]) -> list[npt.NDArray[np.uint8]]:
        import torch

        side = self.architecture["crop_size"]
        batch = torch.from_numpy(
            np.stack([decode_image(image, [3, side, side]) for image in images])
        )
        labels = self.network(batch).argmax(dim=1).numpy()
        return [
            resize_mask(mask, image_size(image)) for mask, image in zip(labels, images, strict=True)
        ]

    def answer_image(self, body: bytes, accept: str | None) -> tuple[bytes, str]:
        from PIL import Image

        mask = self.masks([body])[0]
        if accept != PNG:
            return json.dumps({"shape": list(mask.shape), "mask": mask.tolist()}).encode(), JSON
        buffer = io.BytesIO()
        Image.fromarray(mask, mode="L").save(buffer, format="PNG")
        return buffer.getvalue(), PNG

    def answer(self, payload: Any) -> Any:
        images = [image_from_instance(item) for item in instances(payload, limit=32)]
        return {
            "predictions": [
                {"shape": list(mask.shape), "mask": mask.tolist()} for mask in self.masks(images)
            ]
        }
