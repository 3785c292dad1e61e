"""API keys: the stored key ring every service checks credentials against.

A key is an id (`CKIA...`, shaped like an AWS access key id so SageMaker clients take it) and a
secret, shown once when the key is made. The store keeps only what checking needs: the secret's
SHA-256 for Bearer use and the secret sealed with the platform key for SigV4 and signed events,
which must recompute an HMAC with it. Keys live under the kernel's private prefix `platform/keys/`,
which no user-supplied location can reach (`cairn.namespaces`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cairn.auth.scopes import ALL_ENDPOINTS, Scope
from cairn.auth.sealing import SecretBox
from cairn.contracts.envelope import utc_now
from cairn.errors import InvalidInput, NotFound, ObjectNotFound
from cairn.store.base import ObjectStore

log = logging.getLogger("cairn.auth")

KEYS_PREFIX = "platform/keys/"
_ID_ALPHABET = string.ascii_uppercase + string.digits
_KEY_ID = re.compile(r"^CKIA[A-Z0-9]{16}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$")
_MISS_RETRY_S = 2.0


class ApiKey(BaseModel):
    """One stored key: who it names, what it may do, until when; never the plain secret."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    key_id: str
    name: str = Field(description="The principal this key authenticates as.")
    description: str = ""
    scopes: list[Scope]
    endpoints: list[str] = Field(default_factory=lambda: [ALL_ENDPOINTS])
    secret_sha256: str
    sealed_secret: str
    created_at: datetime = Field(default_factory=utc_now)
    created_by: str = ""
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or utc_now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    def matches(self, secret: str) -> bool:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(digest, self.secret_sha256)

    def public(self) -> dict[str, Any]:
        """What may be shown: everything but the secret's hash and sealed copy."""
        body = self.model_dump(mode="json", exclude={"secret_sha256", "sealed_secret"})
        body["status"] = "Active" if self.is_active() else "Inactive"
        return body


class IssuedKey(BaseModel):
    """A key as it is returned once, at creation: the only time the secret leaves the platform."""

    key: ApiKey
    secret: str

    @property
    def token(self) -> str:
        return f"{self.key.key_id}:{self.secret}"

    def shown(self) -> dict[str, Any]:
        return {**self.key.public(), "secret": self.secret, "token": self.token}


def is_key_id(value: str) -> bool:
    return bool(_KEY_ID.match(value))


def key_path(key_id: str) -> str:
    if not is_key_id(key_id):
        raise InvalidInput(f"{key_id!r} is not a Cairn key id")
    return f"{KEYS_PREFIX}{key_id}.json"


def new_key_id() -> str:
    return "CKIA" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def issue_key(
    store: ObjectStore,
    box: SecretBox,
    *,
    name: str,
    scopes: list[Scope],
    created_by: str,
    endpoints: list[str] | None = None,
    description: str = "",
    expires_at: datetime | None = None,
    secret: str | None = None,
) -> IssuedKey:
    """Make a key and store it create-only; the returned secret is never stored in plain text."""
    if not _NAME.match(name):
        raise InvalidInput(f"key name {name!r} must be 1-64 of A-Z a-z 0-9 . _ @ : -", field="name")
    if not scopes:
        raise InvalidInput("a key needs at least one scope", field="scopes")
    if expires_at is not None and expires_at <= utc_now():
        raise InvalidInput("expires_at is in the past", field="expires_at")
    secret = secret or secrets.token_urlsafe(30)
    key = ApiKey(
        key_id=new_key_id(),
        name=name,
        description=description,
        scopes=sorted(set(scopes)),
        endpoints=sorted(set(endpoints or [ALL_ENDPOINTS])),
        secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
        sealed_secret=box.seal(secret),
        created_by=created_by,
        expires_at=expires_at,
    )
    store.put_bytes(
        key_path(key.key_id),
        key.model_dump_json().encode(),
        content_type="application/json",
        if_none_match=True,
    )
    return IssuedKey(key=key, secret=secret)


def load_key(store: ObjectStore, key_id: str) -> ApiKey | None:
    """The stored key, or None when absent, malformed or unreadable (logged, never raised)."""
    if not is_key_id(key_id):
        return None
    try:
        raw = store.get_bytes(key_path(key_id))
    except ObjectNotFound:
        return None
    try:
        return ApiKey.model_validate_json(raw)
    except ValidationError:
        log.error("skipping unreadable key document %s", key_path(key_id))
        return None


def list_keys(store: ObjectStore) -> list[ApiKey]:
    """Every readable stored key; unreadable documents are logged and skipped."""
    keys: list[ApiKey] = []
    for info in store.list(KEYS_PREFIX):
        key_id = info.key[len(KEYS_PREFIX) :].removesuffix(".json")
        key = load_key(store, key_id)
        if key is not None:
            keys.append(key)
    return keys


def revoke_key(store: ObjectStore, key_id: str) -> ApiKey:
    """Mark a key revoked (kept for the audit trail); `NotFound` if there is no such key."""
    key = load_key(store, key_id)
    if key is None:
        raise NotFound(f"no key {key_id!r}")
    if key.revoked_at is None:
        key = key.model_copy(update={"revoked_at": utc_now()})
        store.put_bytes(
            key_path(key_id), key.model_dump_json().encode(), content_type="application/json"
        )
    return key


class KeyRing:
    """Cached reads of the stored keys: a hit is a dict look-up; a revocation shows in `ttl_s`.

    A known key whose entry is older than `ttl_s` is served from the cache while one background
    thread reads it again, so the request path (the gateway's event loop) never waits on the
    store for a key it knows; only a key never seen before is read inline (a miss is remembered
    for a few seconds).
    """

    def __init__(self, store: ObjectStore, box: SecretBox, *, ttl_s: float = 5.0) -> None:
        self.store = store
        self.box = box
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._secrets: dict[str, str] = {}
        self._refreshing: set[str] = set()
        self._refresher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cairn-keyring")

    def get(self, key_id: str) -> ApiKey | None:
        """The active key with this id, or None (unknown, revoked, expired)."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or (cached[1] is None and now - cached[0] > _MISS_RETRY_S):
            cached = self._load(key_id)
        elif cached[1] is not None and now - cached[0] > self.ttl_s:
            self._refresh_later(key_id)
        key = cached[1]
        return key if key is not None and key.is_active() else None

    def _load(self, key_id: str) -> tuple[float, ApiKey | None]:
        if len(self._cache) > 10_000:
            self._cache.clear()
        entry = (time.monotonic(), load_key(self.store, key_id))
        self._cache[key_id] = entry
        return entry

    def _refresh_later(self, key_id: str) -> None:
        if key_id in self._refreshing:
            return
        self._refreshing.add(key_id)

        def refresh() -> None:
            try:
                self._load(key_id)
            finally:
                self._refreshing.discard(key_id)

        self._refresher.submit(refresh)

    def secret_for(self, key_id: str) -> str | None:
        """The plain secret of an active key, for SigV4 and event signatures."""
        key = self.get(key_id)
        if key is None:
            return None
        secret = self._secrets.get(key.sealed_secret)
        if secret is None:
            secret = self._secrets[key.sealed_secret] = self.box.open(key.sealed_secret)
        return secret

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    def has_any(self) -> bool:
        return any(True for _ in self.store.list(KEYS_PREFIX))
