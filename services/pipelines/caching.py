"""Step caching: a key that is a content hash of what determines a step's result.

The key covers the step's type, its resolved arguments and its declared outputs, with every value
that points at stored content replaced by a hash of that content: a `dataset://` URI by the
version's sha256, a store key or prefix (the script a job runs, an earlier step's output folder) by
the ETags of the objects under it, relative to it. Names the platform generates (job names inside
output paths), execution ids and timestamps therefore never change a key, so a re-run after an
unrelated edit hits the cache, and two pipelines whose steps match share entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from cairn.documents import DocumentStore
from cairn.errors import CairnError
from cairn.store.base import ObjectStore
from pydantic import BaseModel, Field

from services.pipelines.definition import Step

log = logging.getLogger("cairn.pipelines")

CACHE = "pipelines/cache/"
MAX_FINGERPRINT_OBJECTS = 1000


class CacheEntry(BaseModel):
    cache_key: str
    step_type: str
    properties: dict[str, Any] = Field(default_factory=dict)
    execution_id: str
    step_name: str
    created_at: datetime


def _store_key(store: ObjectStore, value: str) -> str | None:
    base = store.uri("k")[:-1]  # the URI of the store's root (an empty key is refused)
    if base and value.startswith(base):
        return value[len(base) :]
    if "://" in value or "/" not in value or value.startswith("/") or " " in value:
        return None
    return value


def content_fingerprint(store: ObjectStore, value: str) -> str | None:
    """A hash of the content a string points at; None when it points at nothing stored."""
    if value.startswith("dataset://"):
        from cairn.datasets import resolve_dataset_uri  # pyarrow and duckdb: only when needed

        try:
            return "dataset:" + resolve_dataset_uri(store, value).version.sha256
        except CairnError:
            return None
    key = _store_key(store, value)
    if key is None:
        return None
    digest = hashlib.sha256()
    count = 0
    for info in store.list(key):
        count += 1
        if count > MAX_FINGERPRINT_OBJECTS:
            return None
        digest.update(f"{info.key[len(key) :]}\0{info.etag}\0{info.size}\n".encode())
    return f"content:{digest.hexdigest()}" if count else None


def fingerprint(store: ObjectStore, value: Any) -> Any:
    if isinstance(value, str):
        return content_fingerprint(store, value) or value
    if isinstance(value, dict):
        return {key: fingerprint(store, item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [fingerprint(store, item) for item in value]
    return value


def cache_key(store: ObjectStore, step: Step, arguments: dict[str, Any]) -> str:
    """The content hash that decides a hit (blocking: it reads the store)."""
    material = {
        "type": step.type,
        "arguments": fingerprint(store, arguments),
        "outputs": step.outputs,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class StepCache:
    """Entries under `pipelines/cache/<key>.json`, shared by every pipeline."""

    def __init__(self, store: ObjectStore) -> None:
        self.entries: DocumentStore[CacheEntry] = DocumentStore(store, CacheEntry, CACHE)

    def find(self, step: Step, key: str, now: datetime) -> CacheEntry | None:
        if step.cache is None or not step.cache.enabled:
            return None
        found = self.entries.get_or_none(f"{key}.json")
        if found is None or found.doc.step_type != step.type:
            return None
        expire = step.cache.expire_after
        if expire is not None and now - found.doc.created_at > expire:
            return None
        return found.doc

    def remember(self, entry: CacheEntry) -> None:
        """The newest result wins: a later run may refresh an expired entry."""
        self.entries.update(f"{entry.cache_key}.json", lambda _: entry)
