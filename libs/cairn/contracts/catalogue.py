"""The event catalogue: event type -> model -> topic -> key field -> owning service.

Nothing else in Cairn hard-codes a topic name. An event model registers itself with `@event(...)`;
extra modules (a user's own events) register theirs when listed in `CAIRN_CONTRACT_MODULES`.
"""

from __future__ import annotations

import builtins
import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cairn.contracts.envelope import Envelope, RawEnvelope, envelope_class
from cairn.errors import EventValidationError, UnknownEventType

ModelT = TypeVar("ModelT", bound=type[BaseModel])

TOPIC_PREFIX = "cairn"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class EventSpec:
    """What the platform knows about one event type."""

    type: str
    model: builtins.type[BaseModel]
    topic: str
    key_field: str
    owner: str
    partitions: int
    description: str
    required_scope: str | None = None
    senders: tuple[str, ...] = ()

    @property
    def dlq_topic(self) -> str:
        return self.topic + DLQ_SUFFIX

    def key_of(self, data: BaseModel) -> bytes:
        """The Kafka key: the aggregate id, so one aggregate's events stay ordered."""
        return str(getattr(data, self.key_field)).encode()


_CATALOGUE: dict[str, EventSpec] = {}


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def event(
    *,
    owner: str,
    key: str,
    partitions: int = 4,
    topic: str | None = None,
    required_scope: str | None = None,
    senders: tuple[str, ...] = (),
) -> Callable[[ModelT], ModelT]:
    """Register a pydantic model as the `data` of an event type named after the class.

    Args:
        owner: the one service that produces it (for a request: the one that acts on it).
        key: the field holding the aggregate id (the Kafka key).
        partitions: partitions of its topic.
        topic: overrides `cairn.<owner>.<kebab-type>`.
        required_scope: a privileged request: the envelope must be signed by a key holding this
            scope, by the owner, or by one of `senders`; otherwise it is dead-lettered.
        senders: services allowed to send this request with their own credential.
    """

    def register(model: ModelT) -> ModelT:
        if key not in model.__pydantic_fields__:
            raise TypeError(f"{model.__name__} has no key field {key!r}")
        name = model.__name__
        spec = EventSpec(
            type=name,
            model=model,
            topic=topic or f"{TOPIC_PREFIX}.{owner}.{_kebab(name)}",
            key_field=key,
            owner=owner,
            partitions=partitions,
            description=(model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
            required_scope=required_scope,
            senders=senders,
        )
        existing = _CATALOGUE.get(name)
        if (
            existing is not None
            and existing.model is not model
            and existing.model.__qualname__ != model.__qualname__
        ):
            raise TypeError(f"event type {name!r} is registered twice")
        _CATALOGUE[name] = spec
        return model

    return register


def load_contract_modules(modules: Iterable[str]) -> None:
    """Import modules that register extra event types (idempotent)."""
    for module in modules:
        importlib.import_module(module)


def _ensure_builtin() -> None:
    importlib.import_module("cairn.contracts.events")


def catalogue() -> dict[str, EventSpec]:
    """Every registered event type, by name."""
    _ensure_builtin()
    return dict(sorted(_CATALOGUE.items()))


def spec_for(event_type: str | type[BaseModel]) -> EventSpec:
    """The spec of an event type, by name or by its data model."""
    _ensure_builtin()
    name = event_type if isinstance(event_type, str) else event_type.__name__
    try:
        return _CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(_CATALOGUE))
        raise UnknownEventType(f"unknown event type {name!r}; known: {known}") from None


def spec_for_topic(topic: str) -> EventSpec:
    _ensure_builtin()
    for spec in _CATALOGUE.values():
        if spec.topic == topic:
            return spec
    raise UnknownEventType(f"no event type is published on topic {topic!r}")


def validation_message(error: ValidationError, prefix: str = "") -> str:
    """A one-line reason naming every bad field, e.g. `data.job_name: Field required`."""
    parts = []
    for item in error.errors():
        where = (
            ".".join(
                [prefix, *(str(p) for p in item["loc"])]
                if prefix
                else [str(p) for p in item["loc"]]
            )
            or "<root>"
        )
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def validate_data(event_type: str, data: Any) -> BaseModel:
    """Validate an event's `data` against its model; raise EventValidationError naming the field."""
    spec = spec_for(event_type)
    try:
        validated: BaseModel = spec.model.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError(
            f"invalid {event_type}: {validation_message(exc, 'data')}", event_type=event_type
        ) from exc
    return validated


def decode_envelope(raw: bytes | str | dict[str, Any]) -> Envelope[Any]:
    """Parse bytes from any Kafka client into a typed envelope (EventValidationError if bad)."""
    try:
        if isinstance(raw, dict):
            loose = RawEnvelope.model_validate(raw)
        else:
            loose = RawEnvelope.model_validate_json(raw)
    except ValidationError as exc:
        raise EventValidationError(f"invalid envelope: {validation_message(exc)}") from exc
    data = validate_data(loose.type, loose.data)
    typed: Envelope[Any] = envelope_class(type(data)).model_validate(
        {**loose.model_dump(exclude={"data"}), "data": data}
    )
    return typed
