"""Scoring with the deep built-ins that take whole request bodies (`StructuredModel`).

SageMaker's batch transform hands these algorithms what their containers take: JSON Lines
records (Object2Vec `{"in0": [...], "in1": [...]}`, DeepAR series, Seq2Seq `{"source": ...}`,
observations for a policy), text lines (Seq2Seq sentences), image files (one file, one request,
one `<file>.out`) or a `.lst` manifest of images (a record per line: `index<TAB>class<TAB>path`,
the path relative to the manifest's folder). Each record's answer is the algorithm's own
per-record shape; the model's code lives in `cairn.builtins`, never in the trainer.
"""

from __future__ import annotations

import base64
import json
import posixpath
from collections.abc import Callable
from typing import Any

from cairn.errors import CairnError, InvalidInput
from cairn.store.base import check_key

from services.batch.domain import CSV, IMAGE_TYPES, JSONLINES, TEXT
from services.batch.transform import Item, RecordError, Scored, reason_of, record_error
from services.batch.validation import Plan

Fetch = Callable[[str], bytes]


def is_structured(model: Any) -> bool:
    """A model answering whole bodies (without importing torch to ask)."""
    return bool(getattr(model, "structured", False))


class StructuredTextScorer:
    """Scores JSON Lines, text lines or `.lst` image manifests with a `StructuredModel`."""

    def __init__(self, model: Any, plan: Plan, input_key: str, fetch: Fetch) -> None:
        self.model = model
        self.plan = plan
        self.folder = posixpath.dirname(input_key)
        self.fetch = fetch
        self.environment = plan.request.environment

    def score(
        self, batch: list[Item], header: list[str] | None, errors: list[RecordError]
    ) -> Scored | None:
        if self.plan.content_type == CSV or self.plan.accept == CSV:
            reason = (
                f"{self.model.manifest.algorithm} takes and answers JSON Lines, text lines or "
                "images, not CSV"
            )
            errors.extend(record_error(item, reason) for item in batch)
            return None
        good: list[Item] = []
        items: list[Any] = []
        instances: list[Any] = []
        for item in batch:
            try:
                parsed, instance = self._instance(item[1])
            except (CairnError, ValueError, KeyError, IndexError, TypeError, OSError) as error:
                errors.append(record_error(item, reason_of(error)))
                continue
            good.append(item)
            items.append(parsed)
            instances.append(instance)
        if not good:
            return None
        try:
            answers = self.model.answer_records(instances, self.environment)
        except CairnError:  # one bad record fails the request: answer them one by one
            return self._one_by_one(good, items, instances, errors)
        return Scored(good, items, records=answers)

    def _one_by_one(
        self,
        batch: list[Item],
        items: list[Any],
        instances: list[Any],
        errors: list[RecordError],
    ) -> Scored | None:
        kept: list[int] = []
        answers: list[Any] = []
        for position, instance in enumerate(instances):
            try:
                answers.extend(self.model.answer_records([instance], self.environment))
            except CairnError as error:
                errors.append(record_error(batch[position], f"scoring failed: {error.message}"))
                continue
            kept.append(position)
        if not kept:
            return None
        return Scored([batch[i] for i in kept], [items[i] for i in kept], records=answers)

    def _instance(self, line: bytes) -> tuple[Any, Any]:
        """(the record as joined to the output, what the model is sent for it)."""
        text = line.decode()
        if self.plan.content_type == TEXT:
            return text.strip(), text.strip()
        if self.plan.content_type in IMAGE_TYPES:
            return text, {"b64": base64.b64encode(self.fetch(self._image_key(text))).decode()}
        parsed = json.loads(text)
        return parsed, self.plan.input_filter.select(parsed)

    def _image_key(self, line: str) -> str:
        """The image a `.lst` line names (its last tab-separated field), beside the manifest."""
        relative = line.rstrip("\r\n").split("\t")[-1].strip()
        key = posixpath.normpath(posixpath.join(self.folder, relative))
        if not relative or relative.startswith("/") or not key.startswith(self.folder + "/"):
            raise InvalidInput(f"image path {relative!r} is not under the manifest's folder")
        check_key(key)
        return key


def score_file(model: Any, plan: Plan, data: bytes) -> bytes:
    """One image file's answer (the response body SageMaker writes to `<file>.out`)."""
    if plan.accept == JSONLINES:  # one JSON line per file, the per-record shape
        image = {"b64": base64.b64encode(data).decode()}
        answer = model.answer_records([image], plan.request.environment)[0]
        return json.dumps(answer).encode() + b"\n"
    body, _ = model.respond(data, plan.content_type, plan.accept)
    return bytes(body)
