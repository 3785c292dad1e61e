"""Small generated data sets, in SageMaker's file formats, for the deep built-in algorithms."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(record) for record in records).encode()


def digit_images(start: int, stop: int, side: int = 16) -> tuple[dict[str, bytes], bytes]:
    """scikit-learn's 8x8 digits as PNGs (`img/N.png`) and an `.lst` manifest of their classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    files, lines = {}, []
    for index in range(start, stop):
        image = Image.fromarray((digits.images[index] * 255 / 16).astype(np.uint8))
        files[f"img/{index}.png"] = png(np.asarray(image.resize((side, side))))
        lines.append(f"{index}\t{digits.target[index]}\timg/{index}.png")
    return files, "\n".join(lines).encode()


def shape_scenes(
    count: int, side: int = 48, seed: int = 0
) -> tuple[list[np.ndarray], list[list[tuple[int, int, int, int, int]]], list[np.ndarray]]:
    """Noisy RGB scenes with one or two planted shapes: squares (class 0), discs (class 1).

    Returns the images, their boxes (class, xmin, ymin, xmax, ymax in pixels, exclusive ends)
    and per-pixel class masks (0 background, 1 square, 2 disc).
    """
    rng = np.random.default_rng(seed)
    images, boxes, masks = [], [], []
    ys, xs = np.mgrid[0:side, 0:side]
    for _ in range(count):
        image = rng.normal(100, 30, (side, side, 3)).clip(0, 255)
        mask = np.zeros((side, side), dtype=np.uint8)
        planted: list[tuple[int, int, int, int, int]] = []
        for _ in range(rng.integers(1, 3)):
            size = int(rng.integers(side // 4, side // 3 + 1))
            for _ in range(20):  # find a free spot
                x0, y0 = (int(v) for v in rng.integers(0, side - size, 2))
                if not mask[y0 : y0 + size, x0 : x0 + size].any():
                    break
            else:
                continue
            cls = int(rng.integers(0, 2))
            if cls == 0:
                region = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
            else:
                r = size / 2
                region = (ys - y0 - r + 0.5) ** 2 + (xs - x0 - r + 0.5) ** 2 <= r * r
            image[region] = rng.uniform(200, 255, 3)
            mask[region] = cls + 1
            planted.append((cls, x0, y0, x0 + size, y0 + size))
        images.append(image.astype(np.uint8))
        boxes.append(planted)
        masks.append(mask)
    return images, boxes, masks


def detection_channel(count: int, side: int, seed: int) -> tuple[dict[str, bytes], bytes]:
    """Scene PNGs and SageMaker's detection `.lst` (header 2, object width 5, coords 0..1)."""
    images, boxes, _ = shape_scenes(count, side, seed)
    files, lines = {}, []
    for index, (image, planted) in enumerate(zip(images, boxes, strict=True)):
        files[f"{index}.png"] = png(image)
        objects = [
            f"{cls}\t{x0 / side:.4f}\t{y0 / side:.4f}\t{x1 / side:.4f}\t{y1 / side:.4f}"
            for cls, x0, y0, x1, y1 in planted
        ]
        lines.append("\t".join([str(index), "2", "5", *objects, f"{index}.png"]))
    return files, "\n".join(lines).encode()


def segmentation_channels(
    count: int, side: int, seed: int
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Scene JPEG-free PNGs and their annotation PNGs (pixel value = class), same names."""
    images, _, masks = shape_scenes(count, side, seed)
    names = [f"{index}.png" for index in range(count)]
    return (
        {name: png(image) for name, image in zip(names, images, strict=True)},
        {name: png(mask) for name, mask in zip(names, masks, strict=True)},
    )


def seasonal_series(count: int, length: int, seed: int, noise: float = 1.0) -> list[dict[str, Any]]:
    """Hourly series: a level plus a daily sine wave of random amplitude, plus noise."""
    rng = np.random.default_rng(seed)
    records = []
    t = np.arange(length)
    for index in range(count):
        level, amplitude = rng.uniform(5, 20), rng.uniform(2, 6)
        values = level + amplitude * np.sin(2 * np.pi * t / 24) + rng.normal(0, noise, length)
        records.append(
            {
                "start": "2024-01-01 00:00:00",
                "target": [round(float(v), 3) for v in values],
                "cat": [index % 3],
            }
        )
    return records


def reversal_pairs(count: int, seed: int) -> tuple[bytes, bytes]:
    """A toy translation task: the target is the source's words reversed."""
    rng = np.random.default_rng(seed)
    words = list("abcdefgh")
    sources, targets = [], []
    for _ in range(count):
        sentence = [words[i] for i in rng.integers(0, len(words), rng.integers(3, 7))]
        sources.append(" ".join(sentence))
        targets.append(" ".join(reversed(sentence)))
    return "\n".join(sources).encode(), "\n".join(targets).encode()


def topic_pairs(count: int, seed: int) -> list[dict[str, Any]]:
    """Object2Vec pairs over 4 topics of 10 tokens each: label 1 when both share a topic."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        first = int(rng.integers(4))
        related = bool(rng.random() < 0.5)
        second = first if related else (first + int(rng.integers(1, 4))) % 4
        records.append(
            {
                "label": int(related),
                "in0": (first * 10 + rng.integers(0, 10, rng.integers(3, 8))).tolist(),
                "in1": (second * 10 + rng.integers(0, 10, rng.integers(3, 8))).tolist(),
            }
        )
    return records
