"""Raw channel files for the deep built-ins: JSON Lines, parallel text, images and `.lst` manifests.

These algorithms read SageMaker's own input formats instead of a table: a channel is the set of
files under its prefix, keyed by their path relative to it (`cat/001.png`, `train.lst`).
"""

from __future__ import annotations

import abc
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from cairn.errors import InvalidInput

from services.trainer.algorithms.base import HP, Algorithm, TrainedModel, TrainingContext
from services.trainer.features import LabelMode, TrainingData

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class RawChannel:
    """One channel's files: path relative to the channel prefix -> bytes."""

    name: str
    files: dict[str, bytes] = field(default_factory=dict)

    def with_suffix(self, *suffixes: str) -> dict[str, bytes]:
        found = {path: data for path, data in self.files.items() if path.lower().endswith(suffixes)}
        return dict(sorted(found.items()))


Channels = Mapping[str, RawChannel]


class FileAlgorithm(Algorithm[HP]):
    """An algorithm that reads its channels' files itself (`train_files`), not a table.

    `channels` names the channels it reads; ones it does not name are refused. A job of an
    algorithm with `channels == ()` (reinforcement learning) has no input channel at all.
    """

    reads_files: ClassVar[bool] = True
    channels: ClassVar[tuple[str, ...]] = ("train", "validation")

    def label_mode(self, hyperparameters: HP) -> LabelMode:
        return "none"

    def train(self, data: TrainingData, hyperparameters: HP, ctx: TrainingContext) -> TrainedModel:
        raise NotImplementedError(f"{self.name} reads its channels' files: call train_files")

    @abc.abstractmethod
    def train_files(
        self, channels: Channels, hyperparameters: HP, ctx: TrainingContext
    ) -> TrainedModel:
        """Train from the channels' files; `details["class_labels"]` names classes, if any."""


def require(channels: Channels, name: str, algorithm: str) -> RawChannel:
    if name not in channels:
        raise InvalidInput(f"{algorithm} needs a {name!r} channel (has: {sorted(channels)})")
    return channels[name]


def json_lines(channel: RawChannel) -> list[dict[str, Any]]:
    """Every record of a channel's `.json`/`.jsonl` files; a bad line names its file and number."""
    records: list[dict[str, Any]] = []
    for path, data in channel.with_suffix(".json", ".jsonl").items():
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidInput(f"{channel.name}/{path} line {number}: {error}") from None
            if not isinstance(record, dict):
                raise InvalidInput(f"{channel.name}/{path} line {number}: not a JSON object")
            records.append(record)
    if not records:
        raise InvalidInput(f"channel {channel.name!r} holds no JSON Lines records")
    return records


def decode_image(data: bytes, shape: tuple[int, int, int], *, where: str) -> npt.NDArray[Any]:
    """An image as a float32 (channels, height, width) array in [0, 1], resized to `shape`."""
    from cairn.builtins.structured import decode_image as decode

    try:
        return decode(data, list(shape))
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error.message}") from None


def decode_mask(data: bytes, size: tuple[int, int], *, where: str) -> npt.NDArray[np.int64]:
    """A PNG of class indices (SageMaker's annotation format), nearest-neighbour resized."""
    from PIL import Image, UnidentifiedImageError

    height, width = size
    try:
        opened = Image.open(io.BytesIO(data))
        plain = opened if opened.mode in ("L", "P", "I") else opened.convert("L")
        image = plain.resize((width, height), Image.Resampling.NEAREST)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InvalidInput(f"{where}: not a readable mask ({error})") from None
    return np.asarray(image, dtype=np.int64)


def encode_mask_png(mask: npt.NDArray[Any]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def lst_rows(channel: RawChannel) -> list[tuple[list[float], str]]:
    """Rows of the channel's `.lst` files: `index <TAB> label fields... <TAB> relative path`."""
    rows = []
    for path, data in channel.with_suffix(".lst").items():
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3:
                raise InvalidInput(f"{channel.name}/{path} line {number}: needs index, label, path")
            try:
                labels = [float(value) for value in fields[1:-1]]
            except ValueError:
                raise InvalidInput(
                    f"{channel.name}/{path} line {number}: labels must be numbers"
                ) from None
            rows.append((labels, fields[-1].strip()))
    return rows


def image_bytes(channel: RawChannel, relative: str) -> bytes:
    try:
        return channel.files[relative]
    except KeyError:
        raise InvalidInput(f"channel {channel.name!r} has no image {relative!r}") from None


def labelled_images(
    channel: RawChannel, lst: RawChannel | None
) -> tuple[list[tuple[bytes, int]], list[str] | None]:
    """(image, class index) pairs from an `.lst` manifest, else from `class_name/` folders.

    A manifest's labels are class indices already (SageMaker's rule), so there are no names;
    folders give names in sorted order, the order im2rec numbers them in.
    """
    manifest = lst or (channel if channel.with_suffix(".lst") else None)
    if manifest is not None:
        pairs = [
            (image_bytes(channel, path), int(labels[0])) for labels, path in lst_rows(manifest)
        ]
        if not pairs:
            raise InvalidInput(f"the .lst manifest of {channel.name!r} lists no images")
        return pairs, None
    images = channel.with_suffix(*IMAGE_SUFFIXES)
    names = sorted({path.split("/")[0] for path in images if "/" in path})
    if not names:
        raise InvalidInput(
            f"channel {channel.name!r}: put images in one folder per class or add an .lst file"
        )
    index = {name: code for code, name in enumerate(names)}
    return [
        (data, index[path.split("/")[0]]) for path, data in images.items() if "/" in path
    ], names


def make_optimizer(name: str, parameters: Any, lr: float, momentum: float, wd: float) -> Any:
    """SageMaker's optimizer names on torch's, with the image algorithms' momentum and `nag`."""
    import torch

    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, momentum=momentum, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(parameters, lr=lr, weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(parameters, lr=lr, weight_decay=wd)
    nesterov = name == "nag"
    return torch.optim.SGD(
        parameters, lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov and momentum > 0
    )


def run_epochs(
    ctx: TrainingContext,
    epochs: int,
    train_epoch: Callable[[int], dict[str, float]],
    evaluate: Callable[[], dict[str, float]],
    *,
    patience: int | None = None,
    watch: str | None = None,
    higher_is_better: bool = True,
) -> dict[str, float]:
    """Train epoch by epoch, reporting metrics each one; stop early, at a stop or at the limit."""
    best: float | None = None
    waited = 0
    metrics: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        metrics = {**train_epoch(epoch), **evaluate()}
        ctx.progress(epoch, epochs, metrics)
        if ctx.should_stop():
            break
        if patience is None or watch is None or watch not in metrics:
            continue
        score = metrics[watch] if higher_is_better else -metrics[watch]
        if best is None or score > best:
            best, waited = score, 0
        else:
            waited += 1
            if waited >= patience:
                ctx.log(f"early stop after epoch {epoch}: {watch} did not improve for {patience}")
                break
    return metrics
