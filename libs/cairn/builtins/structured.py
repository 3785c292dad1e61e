"""Served torch models whose requests are not table rows: token lists, series, images, states.

SageMaker's deep built-ins take their own request bodies (`{"instances": [{"in0": [...]}]}`,
an image's bytes) and answer in their own shape. `invoke` is that whole exchange: the body and its
content type in, the response bytes and their content type out. Tabular `predict` is refused.
JSON Lines bodies (SageMaker's batch records: a record a line) go through `answer_records` and
are answered a line each; batch transform scores image files through `respond`, a file a record.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from cairn.builtins.torch_package import TorchModel
from cairn.errors import InvalidInput

JSON = "application/json"
JSONLINES = "application/jsonlines"


class UnsupportedMediaType(InvalidInput):
    http_status = 415
    code = "unsupported_media_type"


IMAGE_TYPES = frozenset({"application/x-image", "image/png", "image/jpeg", "image/jpg"})


class StructuredModel(TorchModel):
    """A torch model served through `invoke`; subclasses implement `answer` (JSON in, JSON out)."""

    structured = True
    accepts: frozenset[str] = frozenset({JSON})

    def predict(self, matrix: npt.NDArray[Any]) -> npt.NDArray[Any]:
        raise InvalidInput(
            f"{self.manifest.algorithm} takes {sorted(self.accepts)} bodies, not table rows"
        )

    async def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        """The gateway's call (the signature of `ScriptModel.invoke`): scored off the loop."""
        import asyncio

        return await asyncio.to_thread(self.respond, body, content_type, accept)

    def respond(
        self, body: bytes, content_type: str, accept: str | None = None
    ) -> tuple[bytes, str]:
        """The response body and its content type for one request."""
        import torch

        allowed = self.accepts | {JSONLINES}
        if content_type not in allowed:
            raise UnsupportedMediaType(
                f"{self.manifest.algorithm} takes {sorted(allowed)}, not {content_type!r}",
                supported=sorted(allowed),
            )
        if content_type == JSONLINES:  # a record a line, answered a line each (batch's shape)
            records = [load_json(line) for line in body.splitlines() if line.strip()]
            answers = self.answer_records(records)
            return b"".join(json.dumps(answer).encode() + b"\n" for answer in answers), JSONLINES
        with torch.inference_mode():
            if content_type in IMAGE_TYPES:
                return self.answer_image(body, accept)
            answer = self.answer(load_json(body))
        return json.dumps(answer).encode(), JSON

    def answer_records(
        self, records: list[Any], environment: Mapping[str, str] | None = None
    ) -> list[Any]:
        """Batch transform's JSON Lines: one answer per record, in SageMaker's per-line shape.

        `environment` is the transform job's (DeepAR reads `DEEPAR_INFERENCE_CONFIG` there)."""
        import torch

        with torch.inference_mode():
            answers = self.record_answers(records, dict(environment or {}))
        if len(answers) != len(records):
            raise InvalidInput(f"{len(records)} records were answered {len(answers)} times")
        return answers

    def record_answers(self, records: list[Any], environment: dict[str, str]) -> list[Any]:
        answered = self.answer({"instances": records})
        predictions = answered.get("predictions") if isinstance(answered, dict) else answered
        if not isinstance(predictions, list):
            raise InvalidInput(f"{self.manifest.algorithm} answers no list of predictions")
        return predictions

    def answer(self, payload: Any) -> Any:
        raise InvalidInput(f"{self.manifest.algorithm} does not take JSON bodies")

    def answer_image(self, body: bytes, accept: str | None) -> tuple[bytes, str]:
        raise InvalidInput(f"{self.manifest.algorithm} does not take images")


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidInput(f"the request body is not valid JSON: {error}") from None


def instances(payload: Any, limit: int = 10_000) -> list[Any]:
    """The `instances` list of a SageMaker JSON request (or a bare list)."""
    items = payload.get("instances") if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items:
        raise InvalidInput('the request needs a non-empty "instances" list')
    if len(items) > limit:
        raise InvalidInput(f"the request holds {len(items)} instances; at most {limit}")
    return items


def int_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise InvalidInput(f"{what} must be a list of integer token ids")
    return value


def image_from_instance(item: Any) -> bytes:
    """An image sent inside JSON: `{"b64": "<base64 bytes>"}` (TensorFlow Serving's convention)."""
    if not isinstance(item, dict) or not isinstance(item.get("b64"), str):
        raise InvalidInput('each image instance must be {"b64": "<base64-encoded image>"}')
    try:
        return base64.b64decode(item["b64"], validate=True)
    except ValueError:
        raise InvalidInput("an image instance is not valid base64") from None


def decode_image(data: bytes, shape: list[int]) -> npt.NDArray[np.float32]:
    """An image as (channels, height, width) floats in [0, 1], resized to the model's shape."""
    import io

    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        opened = Image.open(io.BytesIO(data))
        image = opened.convert("L" if channels == 1 else "RGB").resize((width, height))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InvalidInput(f"the body is not a readable image ({error})") from None
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None, :, :] if channels == 1 else array.transpose(2, 0, 1)
