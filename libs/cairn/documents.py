"""Typed JSON documents in an object store, updated with optimistic concurrency.

Services keep all their durable state this way (ARCHITECTURE rule 5). Every write is conditional:
create-only when the key is absent, `If-Match` on the ETag that was read otherwise, so two writers
can never both win from the same version and no update is lost.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from cairn.errors import CairnError, DocumentUnreadable, ObjectNotFound, PreconditionFailed
from cairn.store.base import ObjectStore

T = TypeVar("T", bound=BaseModel)

_JSON = "application/json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Versioned(Generic[T]):
    """A document with the ETag it was read or written at (pass it to `replace`)."""

    key: str
    doc: T
    etag: str


class DocumentStore(Generic[T]):
    """Documents of one pydantic model under a key prefix of an object store."""

    def __init__(self, store: ObjectStore, model: type[T], prefix: str = "") -> None:
        """Bind a model to a folder of the store.

        Args:
            store: where the JSON lives.
            model: the pydantic model every document under `prefix` validates against.
            prefix: folder for these documents (`"jobs/"`); method keys are relative to it.
        """
        self.store = store
        self.model = model
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _encode(self, doc: T) -> bytes:
        return doc.model_dump_json().encode()

    def _decode(self, key: str, raw: bytes) -> T:
        try:
            return self.model.model_validate_json(raw)
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
                for error in exc.errors(include_url=False)
            ]
            raise DocumentUnreadable(
                f"stored document {self.prefix}{key} is not a valid {self.model.__name__}",
                key=key,
                errors=fields,
            ) from exc

    def get(self, key: str) -> Versioned[T]:
        """The document and its ETag; `ObjectNotFound` if absent."""
        raw, info = self.store.get_with_info(self.prefix + key)
        return Versioned(key, self._decode(key, raw), info.etag)

    def get_or_none(self, key: str) -> Versioned[T] | None:
        try:
            return self.get(key)
        except ObjectNotFound:
            return None

    def create(self, key: str, doc: T) -> Versioned[T]:
        """Store a new document; `PreconditionFailed` if one already exists under `key`."""
        info = self.store.put_bytes(
            self.prefix + key, self._encode(doc), content_type=_JSON, if_none_match=True
        )
        return Versioned(key, doc, info.etag)

    def replace(self, key: str, doc: T, etag: str) -> Versioned[T]:
        """Overwrite the version read at `etag`; `PreconditionFailed` if it changed since."""
        info = self.store.put_bytes(
            self.prefix + key, self._encode(doc), content_type=_JSON, if_match=etag
        )
        return Versioned(key, doc, info.etag)

    def update(
        self,
        key: str,
        fn: Callable[[T | None], T],
        *,
        max_attempts: int = 30,
        backoff_s: float = 0.005,
        backoff_max_s: float = 0.25,
    ) -> Versioned[T]:
        """Read, apply `fn`, write back conditionally; on a lost race, read again and retry.

        `fn` gets the current document (None when absent) and returns the new one. It may run
        several times, so it must not have side effects outside its return value. When it
        returns a document equal to the stored one, nothing is written.

        Args:
            key: document key.
            fn: pure function from the current document (or None) to the new one.
            max_attempts: conditional writes tried before giving up.
            backoff_s: base of the full-jitter exponential wait between attempts.
            backoff_max_s: cap on one wait.

        Raises:
            PreconditionFailed: every attempt lost a race to another writer.
        """
        name = self.prefix + key
        for attempt in range(max_attempts):
            current: T | None = None
            raw: bytes | None = None
            etag: str | None = None
            with contextlib.suppress(ObjectNotFound):
                raw, info = self.store.get_with_info(name)
                current, etag = self._decode(key, raw), info.etag
            new_doc = fn(current)
            encoded = self._encode(new_doc)
            if encoded == raw and etag is not None:
                return Versioned(key, new_doc, etag)
            try:
                written = self.store.put_bytes(
                    name,
                    encoded,
                    content_type=_JSON,
                    if_none_match=etag is None,
                    if_match=etag,
                )
            except PreconditionFailed:
                if attempt + 1 < max_attempts:
                    time.sleep(random.uniform(0, min(backoff_max_s, backoff_s * 2**attempt)))
                continue
            return Versioned(key, new_doc, written.etag)
        raise PreconditionFailed(
            f"update of {name} lost {max_attempts} races in a row", key=key, attempts=max_attempts
        )

    def delete(self, key: str) -> None:
        """Remove a document; a missing one is not an error."""
        self.store.delete(self.prefix + key)

    def keys(self, prefix: str = "") -> list[str]:
        """Keys (relative to this store's prefix) starting with `prefix`, in order."""
        start = len(self.prefix)
        return [info.key[start:] for info in self.store.list(self.prefix + prefix)]

    def top_level(self) -> list[T]:
        """Every document directly under the prefix (not in sub-folders), in key order.

        A listing must not fail on one bad document: an unreadable one is skipped with a warning.
        """
        found: list[T] = []
        start = len(self.prefix)
        for info in self.store.list(self.prefix, recursive=False):
            if not info.key.endswith(".json"):
                continue
            try:
                versioned = self.get_or_none(info.key[start:])
            except CairnError as error:
                log.warning("skipping unreadable document %s: %s", info.key, error)
                continue
            if versioned is not None:
                found.append(versioned.doc)
        return found

    def list(self, prefix: str = "") -> list[Versioned[T]]:
        """Documents whose keys start with `prefix`, in key order (skips ones deleted meanwhile)."""
        found: list[Versioned[T]] = []
        for key in self.keys(prefix):
            versioned = self.get_or_none(key)
            if versioned is not None:
                found.append(versioned)
        return found
