"""The async worker: one `AsyncInferenceRequested` -> its answer or failure object, announced once.

Scoring is the gateway's own: models through its `ModelCache` (`cairn.artifacts.load_model`),
bodies and answers through `cairn.inference`. The endpoint's current state (variants, weights,
`AsyncInferenceConfig`) is read from its `EndpointStateView` when the request runs.

Exactly once: the answer (or failure) object is written create-only, then announced, then an
announcement record is stored under `gateway/async/announced/`. A redelivered request finds the
record and does nothing; one whose object is stored but not yet announced (its worker died in
between) announces what is stored, never a second answer. The variant is picked by a hash of
the output key, so such an announcement names the variant that answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from cairn.contracts.async_events import (
    AsyncFailureCode,
    AsyncInferenceCompleted,
    AsyncInferenceFailed,
    AsyncInferenceRequested,
    location_uri,
)
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import VariantState
from cairn.contracts.state import EndpointStateView, read_state
from cairn.errors import CairnError, ObjectNotFound, PreconditionFailed, Unavailable
from cairn.inference import CSV, JSON, JSONLINES, format_response, media_type, parse_body
from cairn.ports import Publish
from cairn.store.base import ObjectStore
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from services.gateway.domain import WeightedChoice
from services.gateway.runtime import ModelCache

log = logging.getLogger("cairn.gateway.async")

ANNOUNCED_PREFIX = "gateway/async/announced/"

ASYNC_OUTCOMES = Counter(
    "cairn_gateway_async_invocations",
    "Async requests run by this worker, by endpoint and outcome (completed, failed).",
    ["endpoint", "outcome"],
)


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    content_type: str
    variant_name: str


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    code: AsyncFailureCode


Outcome = Answer | Failure


class FailureObject(BaseModel):
    """What a failure location holds: the reason, as JSON."""

    error: str
    code: AsyncFailureCode
    inference_id: str
    endpoint_name: str
    input_location: str


class EndpointSlots:
    """MaxConcurrentInvocationsPerInstance: how many of an endpoint's requests run at once here."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, asyncio.Semaphore]] = {}

    def slot(
        self, endpoint_name: str, limit: int | None
    ) -> contextlib.AbstractAsyncContextManager[object]:
        """Hold one of the endpoint's slots (no limit: the worker's own concurrency bounds it)."""
        if limit is None:
            return contextlib.nullcontext()
        current = self._slots.get(endpoint_name)
        if current is None or current[0] != limit:  # a changed limit applies to later requests
            current = self._slots[endpoint_name] = (limit, asyncio.Semaphore(limit))
        return current[1]


def answer_type(request: AsyncInferenceRequested) -> str:
    """The answer's media type: `Accept`, else the body's type when the gateway answers in it."""
    content_type = media_type(request.content_type)
    default = content_type if content_type in (CSV, JSON, JSONLINES) else JSON
    return media_type(request.accept, default=default)


def stable_draw(key: str) -> float:
    """A number in [0, 1) fixed by `key`: the same request always picks the same variant."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:13], 16) / float(1 << 52)


def pick_variant(view: EndpointStateView | None, key: str) -> VariantState | None:
    if view is None or view.status == "Deleted" or not view.production_variants:
        return None
    variants = view.production_variants
    index = WeightedChoice([variant.weight for variant in variants]).pick(stable_draw(key))
    return None if index is None else variants[index]


def announced_key(request: AsyncInferenceRequested) -> str:
    digest = hashlib.sha256(request.output_key.encode()).hexdigest()[:40]
    return f"{ANNOUNCED_PREFIX}{request.endpoint_name}/{digest}.json"


class AsyncWorker:
    """Runs async requests with the gateway's models and payload code."""

    def __init__(
        self,
        store: ObjectStore,
        cache: ModelCache,
        executor: Executor,
        publish: Publish,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.cache = cache
        self.executor = executor
        self.publish = publish
        self.clock = clock
        self.slots = EndpointSlots()

    async def on_request(self, envelope: Envelope[AsyncInferenceRequested]) -> None:
        """Answer (or fail) the request once, then announce it once."""
        request = envelope.data
        record = announced_key(request)
        if await asyncio.to_thread(self.store.exists, record):
            log.info("async request %s was answered and announced already", request.inference_id)
            return
        outcome = await asyncio.to_thread(self._stored_outcome, request)
        if outcome is None:
            outcome = await self.run(request)
            if not await asyncio.to_thread(self._write_once, request, outcome):
                log.info("async request %s was answered by another delivery", request.inference_id)
                return
        event = self._event(request, outcome)
        await self.publish(event, envelope)
        ASYNC_OUTCOMES.labels(
            request.endpoint_name, "completed" if isinstance(outcome, Answer) else "failed"
        ).inc()
        with contextlib.suppress(PreconditionFailed):
            await asyncio.to_thread(
                self.store.put_bytes,
                record,
                event.model_dump_json().encode(),
                content_type="application/json",
                if_none_match=True,
            )

    async def run(self, request: AsyncInferenceRequested) -> Outcome:
        """Score the request, or say why it cannot be (a transient store outage is raised)."""
        if self.clock() > request.expires_at:
            return Failure(
                f"the request waited past its RequestTTLSeconds (expired at "
                f"{request.expires_at.isoformat()}) before a worker took it",
                "expired",
            )
        view = await asyncio.to_thread(
            read_state, self.store, EndpointStateView, request.endpoint_name
        )
        variant = pick_variant(view, request.output_key)
        if view is None or variant is None:
            return Failure(
                f"endpoint {request.endpoint_name!r} does not exist or serves no traffic",
                "endpoint_not_found",
            )
        config = view.async_inference_config
        limit = config.client_config.max_concurrent_invocations_per_instance if config else None
        async with self.slots.slot(request.endpoint_name, limit):
            try:
                return await self._score(request, variant)
            except Unavailable:
                raise  # the store or a dependency is down: the bus retries the request
            except Exception as error:  # a bug or a broken package: the caller still hears
                log.exception("async request %s failed", request.inference_id)
                return Failure(f"internal error: {error!r}", "internal")

    async def _score(self, request: AsyncInferenceRequested, variant: VariantState) -> Outcome:
        try:
            serving = await self.cache.serving(variant)
        except Unavailable:
            raise
        except CairnError as error:
            return Failure(
                f"the model of variant {variant.variant_name} cannot be loaded: {error.message}",
                "model_error",
            )
        try:
            body = await asyncio.to_thread(self.store.get_bytes, request.input_key)
        except ObjectNotFound:
            return Failure(f"the input {request.input_key!r} no longer exists", "input_not_found")
        model = serving.model
        loop = asyncio.get_running_loop()
        try:
            matrix = parse_body(model, media_type(request.content_type), body)
            result = await asyncio.wait_for(
                loop.run_in_executor(self.executor, model.predict, matrix),
                timeout=request.invocation_timeout_s,
            )
            out_body, out_type = format_response(
                result, model.output_names, answer_type(request), envelope=model.response_envelope
            )
        except CairnError as error:
            return Failure(error.message, "model_error")
        except TimeoutError:
            return Failure(
                f"the model did not answer within InvocationTimeoutSeconds "
                f"({request.invocation_timeout_s} s)",
                "timeout",
            )
        return Answer(out_body, out_type, variant.variant_name)

    def _write_once(self, request: AsyncInferenceRequested, outcome: Outcome) -> bool:
        """Store the answer or failure create-only; False when another delivery stored it."""
        if isinstance(outcome, Answer):
            key, body, content_type = request.output_key, outcome.body, outcome.content_type
        else:
            key, content_type = request.failure_key, "application/json"
            failure = FailureObject(
                error=outcome.reason,
                code=outcome.code,
                inference_id=request.inference_id,
                endpoint_name=request.endpoint_name,
                input_location=location_uri(request.input_key, self.store),
            )
            body = failure.model_dump_json().encode()
        try:
            self.store.put_bytes(key, body, content_type=content_type, if_none_match=True)
        except PreconditionFailed:
            return False
        return True

    def _stored_outcome(self, request: AsyncInferenceRequested) -> Outcome | None:
        """What an earlier delivery stored but did not announce (its worker died), if anything."""
        if self.store.exists(request.output_key):
            view = read_state(self.store, EndpointStateView, request.endpoint_name)
            variant = pick_variant(view, request.output_key)
            name = variant.variant_name if variant is not None else "unknown"
            return Answer(b"", answer_type(request), name)
        try:
            stored = FailureObject.model_validate_json(self.store.get_bytes(request.failure_key))
        except ObjectNotFound:
            return None
        except ValidationError:  # written by someone else: announce that it is there
            return Failure("see the failure object", "internal")
        return Failure(stored.error, stored.code)

    def _event(
        self, request: AsyncInferenceRequested, outcome: Outcome
    ) -> AsyncInferenceCompleted | AsyncInferenceFailed:
        input_location = location_uri(request.input_key, self.store)
        if isinstance(outcome, Answer):
            return AsyncInferenceCompleted(
                inference_id=request.inference_id,
                endpoint_name=request.endpoint_name,
                variant_name=outcome.variant_name,
                input_location=input_location,
                output_location=location_uri(request.output_key, self.store),
                content_type=outcome.content_type,
                received_at=request.received_at,
            )
        return AsyncInferenceFailed(
            inference_id=request.inference_id,
            endpoint_name=request.endpoint_name,
            input_location=input_location,
            failure_location=location_uri(request.failure_key, self.store),
            reason=outcome.reason,
            failure_code=outcome.code,
            received_at=request.received_at,
        )
