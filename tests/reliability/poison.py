"""Poison records for every topic a Cairn service consumes, made from a valid event of it.

What a service consumes is read off the service itself (its broker's subscribers and its
broadcast readers, as the generated Kafka ACLs are), and each topic's event type comes from the
catalogue, so a new subscription is poisoned without touching this file; `probes.PROBES` must
then name a valid event of its type, and the suite fails until it does.

Every poison record is a valid envelope spoiled one way (with an event id of its own), so the
dead letter's error can be checked for naming exactly what was wrong.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from cairn.auth.sealing import secret_box
from cairn.auth.signing import SERVICE_KEY_PREFIX
from cairn.bus.deadletter import DLQ_WHOLE_MAX_BYTES
from cairn.bus.publish import Signer, envelope_for, signed
from cairn.bus.subscribe import REASON_UNAUTHORISED, REASON_UNDECODABLE
from cairn.contracts import Envelope, EventSpec, catalogue, spec_for_topic
from cairn.service import Service
from cairn.settings import CairnSettings
from pydantic import BaseModel

# Over the 1 MiB a default producer (the DLQ's) accepts: dead-lettered as a truncated copy.
OVERSIZE_BYTES = 2 * 1024 * 1024
assert OVERSIZE_BYTES > DLQ_WHOLE_MAX_BYTES
POISON_HEADER = ("origin", b"cairn-poison-suite")


@dataclass(frozen=True)
class Consumption:
    """One service reading one topic: in a consumer group, or on every replica (broadcast)."""

    service: str
    spec: EventSpec
    group: str | None  # None: a broadcast reader, which logs and skips poison (never a DLQ)
    observer: bool = False  # skips an unauthorised request (its owner's group dead-letters it)

    @property
    def label(self) -> str:
        return f"{self.service} <- {self.spec.topic} ({self.group or 'broadcast'})"


def build_service(name: str, settings: CairnSettings) -> Service:
    """`services.<name>.app.create_service` with these settings (its own store from them)."""
    module = importlib.import_module(f"services.{name}.app")
    create: Callable[..., Service] = module.create_service
    return create(settings)


def consumptions(service: Service) -> list[Consumption]:
    """Every topic the service reads, from its subscribers and broadcast readers."""
    found: list[Consumption] = []
    # A group declared but not joined by this replica (the trainer's GPU pool on a CPU worker)
    # is read only by the replicas that join it.
    idle = getattr(service, "_idle_groups", set())
    observers = getattr(service, "_observer_groups", set())
    for subscriber in service.broker.subscribers:
        if getattr(subscriber, "group_id", None) in idle:
            continue
        for topic in getattr(subscriber, "topics", ()):
            spec = spec_for_topic(str(getattr(topic, "name", topic)))
            group = str(subscriber.group_id)  # type: ignore[attr-defined]
            found.append(Consumption(service.name, spec, group, group in observers))
    for topic in service.broadcast_topics:
        found.append(Consumption(service.name, spec_for_topic(topic), None))
    return sorted(found, key=lambda c: (c.spec.topic, c.group or ""))


def owner_signer(spec: EventSpec, settings: CairnSettings) -> Signer:
    """The owning service's own credential: it may send its requests and publish its facts."""
    return Signer(SERVICE_KEY_PREFIX + spec.owner, secret_box(settings).service_secret(spec.owner))


# Poison -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poison:
    """A record no handler may see, what its dead letter must say, and how it must look."""

    shape: str
    value: bytes | None
    expect: tuple[str, ...]  # each must appear in the dead letter's `cairn-dlq-error`
    reason: str = REASON_UNDECODABLE
    truncated: bool = False


def _json(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode()  # NaN / Infinity as JS literals


def _first_number(document: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Path of the first int or float (not bool) in a JSON document, depth first."""
    if isinstance(document, bool):
        return None
    if isinstance(document, int | float):
        return path
    if isinstance(document, dict):
        children: list[tuple[str, Any]] = [(str(k), v) for k, v in document.items()]
    elif isinstance(document, list):
        children = [(str(index), child) for index, child in enumerate(document)]
    else:
        return None
    for key, child in children:
        found = _first_number(child, (*path, key))
        if found is not None:
            return found
    return None


def _set(document: Any, path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        document = document[int(part) if isinstance(document, list) else part]
    document[int(path[-1]) if isinstance(document, list) else path[-1]] = value


def _fresh(valid: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the valid envelope with an event id of its own.

    A poison record sharing the valid event's id could, if it were ever handled, mark that id
    in the ledger and make the valid event look like a duplicate.
    """
    document: dict[str, Any] = json.loads(json.dumps(valid))
    document["event_id"] = str(uuid4())
    return document


def _at_first_number(valid: dict[str, Any], literal: bytes) -> tuple[bytes, str]:
    """The envelope with its first number in `data` (else `schema_version`) written as
    `literal`, and the dotted path of the field that holds it."""
    document = _fresh(valid)
    path = _first_number(document["data"])
    where = ("data", *path) if path is not None else ("schema_version",)
    _set(document, where, "@@NUMBER@@")
    return _json(document).replace(b'"@@NUMBER@@"', literal), ".".join(where)


def _non_finite(valid: dict[str, Any], literal: bytes, shape: str) -> Poison:
    value, where = _at_first_number(valid, literal)
    return Poison(shape, value, (where, "finite number"))


def poisons(
    spec: EventSpec, valid: dict[str, Any], settings: CairnSettings, *, every_shape: bool
) -> list[Poison]:
    """The poison records for one topic: the CI five, or (`every_shape`) many more kinds.

    Args:
        spec: the topic's event type.
        valid: a valid envelope of that type, as JSON (each poison is made from it).
        settings: the platform key, to sign envelopes as a service that may not send them.
        every_shape: the long variant's shapes too.
    """
    wrong_types = _fresh(valid)
    wrong_types["data"][spec.key_field] = ["not", "a", "string"]
    oversize = _fresh(valid)
    oversize["data"]["padding"] = "x" * OVERSIZE_BYTES
    cut = _json(_fresh(valid))
    found = [
        Poison("malformed-json", cut[: len(cut) // 2], ("invalid envelope", "Invalid JSON")),
        Poison(
            "wrong-shape",
            _json({"event": spec.type, "payload": valid["data"]}),
            ("invalid envelope", "type: Field required"),
        ),
        Poison("wrong-types", _json(wrong_types), (f"data.{spec.key_field}", "valid string")),
        Poison("oversize", _json(oversize), ("data.padding", "Extra inputs"), truncated=True),
        _non_finite(valid, b"NaN", "nan"),
    ]
    if every_shape:
        found += _more_poisons(spec, valid, settings)
    return found


def _more_poisons(spec: EventSpec, valid: dict[str, Any], settings: CairnSettings) -> list[Poison]:
    other = next(s for s in catalogue().values() if s.topic != spec.topic)
    huge, _ = _at_first_number(valid, b"9" * 5000)
    found = [
        _non_finite(valid, b"Infinity", "infinity"),
        _non_finite(valid, b"-Infinity", "minus-infinity"),
        _non_finite(valid, b"1e309", "float-overflow"),
        Poison("huge-integer", huge, ("invalid envelope", "number out of range")),
        Poison("empty", b"", ("invalid envelope",)),
        Poison("tombstone", None, ("no value",)),
        Poison("not-utf8", b"\xff\xfe\x00garbage\x80", ("invalid envelope",)),
        Poison("json-array", b"[1, 2, 3]", ("invalid envelope", "<root>")),
        Poison(
            "deep-nesting",
            b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            ("invalid envelope",),
        ),
        Poison(
            "unknown-type",
            _json({**_fresh(valid), "type": "NoSuchEventHappened"}),
            ("NoSuchEventHappened",),
        ),
        Poison("other-topic-type", _json({**_fresh(valid), "type": other.type}), (other.type,)),
        Poison("data-null", _json({**_fresh(valid), "data": None}), ("data",)),
        Poison(
            "bad-timestamp",
            _json({**_fresh(valid), "occurred_at": "yesterday"}),
            ("occurred_at",),
        ),
        Poison(
            "extra-envelope-field",
            _json({**_fresh(valid), "priority": "urgent"}),
            ("priority", "Extra inputs"),
        ),
    ]
    if spec.required_scope is None:
        return found
    unsigned = {k: v for k, v in _fresh(valid).items() if k not in ("key_id", "signature")}
    forged = {**_fresh(valid), "signature": "0" * 64}
    outsider = next(
        name
        for name in ("gateway", "autoscaler", "ingest")
        if name != spec.owner and name not in spec.senders
    )
    stranger = _fresh(valid)
    stranger.pop("key_id", None)
    stranger.pop("signature", None)
    envelope = Envelope[Any].model_validate(stranger)
    signer = Signer(SERVICE_KEY_PREFIX + outsider, secret_box(settings).service_secret(outsider))
    return [
        *found,
        Poison("unsigned-request", _json(unsigned), ("not signed",), REASON_UNAUTHORISED),
        Poison("forged-signature", _json(forged), ("does not match",), REASON_UNAUTHORISED),
        Poison(
            "wrong-sender",
            signed(envelope, signer).model_dump_json().encode(),
            (f"{outsider!r} may not send",),
            REASON_UNAUTHORISED,
        ),
    ]


def valid_envelope(spec: EventSpec, data: BaseModel, settings: CairnSettings) -> dict[str, Any]:
    """`data` in a signed envelope from its owner, as JSON, with its own correlation id."""
    correlation_id = f"poison-{spec.key_of(data).decode()}"
    envelope = envelope_for(data, source=spec.owner, correlation_id=correlation_id)
    document: dict[str, Any] = json.loads(
        signed(envelope, owner_signer(spec, settings)).model_dump_json()
    )
    return document
