"""Human review of live answers (Augmented AI): activation conditions evaluated off the hot path.

The invocation path calls `HumanLoop.offer` after the answer is sent: a dict lookup for endpoints
with no loop, else one `put_nowait` of the bytes already in hand. `run` (a background task)
parses the response, evaluates the endpoint's conditions and publishes `HumanReviewRequested`.
A full queue or a loop over its per-minute budget drops the review (counted), never the answer.

Random sampling hashes the request body, so the same request always gets the same decision, on
every replica and after every restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import hashlib
import io
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.review_events import (
    AndCondition,
    ClassProbabilityBelow,
    Condition,
    DecisionBoundaryBand,
    HumanLoopConfig,
    HumanLoopConfigured,
    HumanLoopConfigView,
    HumanReviewRequested,
    JsonPathCondition,
    OrCondition,
    Payload,
    SamplingCondition,
)
from cairn.contracts.state import list_states
from cairn.store.base import ObjectStore
from jsonpath_ng import JSONPath
from jsonpath_ng.ext.parser import parse
from prometheus_client import Counter

log = logging.getLogger("cairn.gateway.human_loop")

QUEUE_SIZE = 10_000
MAX_PAYLOAD_BYTES = 256 * 1024  # request + response; Kafka's default message limit is 1 MiB
_TEXT_TYPES = ("text/csv", "application/json", "application/jsonlines")

REVIEWS = Counter(
    "cairn_gateway_human_reviews",
    "Answers evaluated by an endpoint's human loop, by outcome.",
    ["endpoint", "outcome"],
)

Publish = Callable[[HumanReviewRequested], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Answered:
    """One answered invocation of an endpoint with a human loop."""

    endpoint: str
    variant: str
    inference_id: str | None
    input_type: str
    input_body: bytes
    output_type: str
    output_body: bytes


# Pure evaluation ---------------------------------------------------------------------------


def sample_draw(body: bytes) -> float:
    """A number in [0, 100) fixed by the request body: the same body, the same draw."""
    digest = hashlib.sha256(body).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def response_document(content_type: str, body: bytes) -> Any:
    """The response as JSON: JSON as is; JSON Lines and CSV as `{"predictions": [rows]}`."""
    text = body.decode()
    if content_type == "application/json":
        return json.loads(text)
    if content_type == "application/jsonlines":
        return {"predictions": [json.loads(line) for line in text.splitlines() if line.strip()]}
    if content_type == "text/csv":
        rows = [[_number(cell) for cell in row] for row in csv.reader(io.StringIO(text)) if row]
        return {"predictions": [row[0] if len(row) == 1 else row for row in rows]}
    raise ValueError(f"cannot read a {content_type} response")


def _number(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell


@lru_cache(maxsize=256)
def compiled(path: str) -> JSONPath:
    return parse(path)


def _probabilities(value: Any) -> list[float] | None:
    """A row's output as probabilities: a number (binary), a list, or an object with one number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        numbers = [item for item in value.values() if isinstance(item, int | float | list)]
        return _probabilities(numbers[0]) if len(numbers) == 1 else None
    if isinstance(value, list) and value and all(isinstance(item, int | float) for item in value):
        return [float(item) for item in value]
    return None


def top_class_probability(probabilities: list[float]) -> float:
    """The predicted class's probability (binary: one p for the positive class)."""
    if len(probabilities) == 1:
        return max(probabilities[0], 1.0 - probabilities[0])
    return max(probabilities)


def _rows(document: Any, path: str) -> list[list[float]]:
    found = [_probabilities(match.value) for match in compiled(path).find(document)]
    return [row for row in found if row is not None]


def _low_probability(condition: ClassProbabilityBelow, document: Any) -> bool:
    params = condition.ConditionParameters
    return any(
        top_class_probability(row) < params.Threshold for row in _rows(document, params.Path)
    )


def _in_band(condition: DecisionBoundaryBand, document: Any) -> bool:
    params = condition.ConditionParameters
    for row in _rows(document, params.Path):
        if len(row) == 1:
            if abs(row[0] - params.Boundary) <= params.Margin:
                return True
        elif len(row) > 1:
            first, second = sorted(row, reverse=True)[:2]
            if first - second <= params.Margin:
                return True
    return False


def _compare(operator: str, found: Any, value: Any) -> bool:
    if operator == "Equals":
        return bool(found == value)
    if operator == "NotEquals":
        return bool(found != value)
    if isinstance(found, bool) or not isinstance(found, int | float):
        return False
    if operator == "LessThan":
        return bool(found < value)
    if operator == "LessThanOrEqual":
        return bool(found <= value)
    if operator == "GreaterThan":
        return bool(found > value)
    return bool(found >= value)


def _json_path(condition: JsonPathCondition, document: Any) -> bool:
    params = condition.ConditionParameters
    matches = [match.value for match in compiled(params.Path).find(document)]
    if params.Operator == "Exists":
        return bool(matches)
    if params.Operator == "NotExists":
        return not matches
    return any(_compare(params.Operator, found, params.Value) for found in matches)


def _reason(condition: Condition) -> str:
    if isinstance(condition, ClassProbabilityBelow):
        return f"ClassProbabilityBelow({condition.ConditionParameters.Threshold:g})"
    if isinstance(condition, DecisionBoundaryBand):
        params = condition.ConditionParameters
        return f"DecisionBoundaryBand({params.Boundary:g}±{params.Margin:g})"
    if isinstance(condition, JsonPathCondition):
        path = condition.ConditionParameters
        return f"JsonPath({path.Path} {path.Operator} {path.Value!r})"
    assert isinstance(condition, SamplingCondition)
    return f"Sampling({condition.ConditionParameters.RandomSamplingPercentage:g}%)"


def fired(condition: Condition, document: Any, draw: float) -> list[str] | None:
    """The reasons a condition holds (its leaves that held), or None when it does not."""
    if isinstance(condition, AndCondition | OrCondition):
        both = isinstance(condition, AndCondition)
        items = condition.And if isinstance(condition, AndCondition) else condition.Or
        reasons: list[str] = []
        for item in items:
            found = fired(item, document, draw)
            if found is None and both:
                return None
            reasons.extend(found or [])
        return reasons if reasons or both else None
    if isinstance(condition, SamplingCondition):
        held = draw < condition.ConditionParameters.RandomSamplingPercentage
    elif isinstance(condition, ClassProbabilityBelow):
        held = _low_probability(condition, document)
    elif isinstance(condition, DecisionBoundaryBand):
        held = _in_band(condition, document)
    else:
        held = _json_path(condition, document)
    return [_reason(condition)] if held else None


def review_reasons(config: HumanLoopConfig, request_body: bytes, document: Any) -> list[str]:
    """Why this answer goes to review (empty: it does not)."""
    draw = sample_draw(request_body)
    reasons: list[str] = []
    if draw < config.random_sampling_percentage:
        reasons.append(f"RandomSamplingPercentage({config.random_sampling_percentage:g}%)")
    if config.activation_conditions is not None:
        for condition in config.activation_conditions.Conditions:
            reasons.extend(fired(condition, document, draw) or [])
    return reasons


def payload(content_type: str, body: bytes) -> Payload:
    if content_type in _TEXT_TYPES:
        with contextlib.suppress(UnicodeDecodeError):
            return Payload(content_type=content_type, data=body.decode())
    return Payload(
        content_type=content_type, encoding="base64", data=base64.b64encode(body).decode()
    )


# The replica's loop ------------------------------------------------------------------------


class _Budget:
    """At most `per_minute` reviews an endpoint per minute on this replica (a fixed window)."""

    def __init__(self) -> None:
        self.window = 0
        self.used: dict[str, int] = {}

    def take(self, endpoint: str, per_minute: int) -> bool:
        window = int(time.monotonic() // 60)
        if window != self.window:
            self.window, self.used = window, {}
        used = self.used.get(endpoint, 0)
        if used >= per_minute:
            return False
        self.used[endpoint] = used + 1
        return True


class HumanLoop:
    """The endpoints' human-loop configs on this replica and the queue of answers to evaluate."""

    def __init__(self, publish: Publish) -> None:
        self.publish = publish
        self.configs: dict[str, tuple[int, HumanLoopConfig]] = {}
        self.queue: asyncio.Queue[Answered] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._budget = _Budget()

    def offer(
        self,
        endpoint: str,
        variant: str,
        inference_id: str | None,
        request: tuple[str, bytes],
        response: tuple[str, bytes],
    ) -> None:
        """Called once the answer is sent: a dict lookup, and an enqueue for looped endpoints."""
        if endpoint not in self.configs:
            return
        answered = Answered(endpoint, variant, inference_id, *request, *response)
        try:
            self.queue.put_nowait(answered)
        except asyncio.QueueFull:
            REVIEWS.labels(endpoint, "dropped_queue_full").inc()

    # Configs ----------------------------------------------------------------------------

    def apply(self, endpoint: str, revision: int, config: HumanLoopConfig | None) -> None:
        """Apply a newer revision (a config, or None: the loop was removed)."""
        current = self.configs.get(endpoint)
        if current is not None and current[0] >= revision:
            return
        if config is None:
            self.configs.pop(endpoint, None)
        else:
            self.configs[endpoint] = (revision, config)

    async def on_configured(self, envelope: Envelope[HumanLoopConfigured]) -> None:
        data = envelope.data
        self.apply(data.endpoint_name, data.revision, data.config)

    async def load_stored(self, store: ObjectStore) -> None:
        views = await asyncio.to_thread(list_states, store, HumanLoopConfigView)
        for view in views:
            self.apply(view.endpoint_name, view.revision, view.config)

    # Evaluation -------------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate queued answers one by one; a failure is logged and the loop goes on."""
        while True:
            answered = await self.queue.get()
            try:
                await self.evaluate(answered)
            except Exception:
                REVIEWS.labels(answered.endpoint, "failed").inc()
                log.exception("human-loop evaluation failed on %s", answered.endpoint)

    async def evaluate(self, answered: Answered) -> HumanReviewRequested | None:
        """Publish a review request when the endpoint's conditions hold; return it."""
        current = self.configs.get(answered.endpoint)
        if current is None:
            return None
        config = current[1]
        try:
            document = response_document(answered.output_type, answered.output_body)
        except (ValueError, UnicodeDecodeError):
            document = None  # an unreadable response can still be sampled
        reasons = review_reasons(config, answered.input_body, document)
        if not reasons:
            REVIEWS.labels(answered.endpoint, "not_activated").inc()
            return None
        if len(answered.input_body) + len(answered.output_body) > MAX_PAYLOAD_BYTES:
            REVIEWS.labels(answered.endpoint, "dropped_too_large").inc()
            log.warning("a review of %s is skipped: its payloads are too large", answered.endpoint)
            return None
        if not self._budget.take(answered.endpoint, config.max_reviews_per_minute):
            REVIEWS.labels(answered.endpoint, "dropped_rate_limited").inc()
            return None
        request = HumanReviewRequested(
            review_id=str(uuid.uuid4()),
            endpoint_name=answered.endpoint,
            variant_name=answered.variant,
            inference_id=answered.inference_id,
            requested_at=datetime.now(UTC),
            reasons=reasons,
            input=payload(answered.input_type, answered.input_body),
            output=payload(answered.output_type, answered.output_body),
            labels=config.labels,
            instructions=config.instructions,
            review_dataset=config.review_dataset or f"{answered.endpoint}-reviews",
        )
        await self.publish(request)
        REVIEWS.labels(answered.endpoint, "requested").inc()
        return request
