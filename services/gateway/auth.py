"""Who may invoke: Cairn access keys, presented as a SigV4 signature or a Bearer token.

The key ring is an in-memory copy of `gateway/keys/`, refreshed in the background (so a revoked
key stops working on every replica within `key_refresh_s`) and on a miss (so a key created on
another replica works at once). The request path only reads dicts.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping

from cairn.access_keys import AccessKey, list_access_keys, load_access_key
from cairn.errors import Forbidden, Unauthenticated
from cairn.store.base import ObjectStore

from services.gateway.sigv4 import SigV4Verifier

log = logging.getLogger("cairn.gateway.auth")

_MISS_RETRY_S = 2.0


class KeyRing:
    """Active access keys by id and by secret, with a negative cache for unknown ids."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._by_id: dict[str, AccessKey] = {}
        self._by_secret: dict[str, AccessKey] = {}
        self._missed: dict[str, float] = {}
        self._last_full_load = 0.0

    def __len__(self) -> int:
        return len(self._by_id)

    def replace(self, keys: list[AccessKey]) -> None:
        """Swap in a new set of keys (both indexes at once)."""
        active = [key for key in keys if key.status == "Active"]
        self._by_id = {key.access_key_id: key for key in active}
        self._by_secret = {key.secret_access_key: key for key in active}
        self._missed.clear()

    def add(self, key: AccessKey) -> None:
        self.replace([*self._by_id.values(), key])

    def reload(self) -> None:
        """Read every key from the store (blocking: call from a thread)."""
        self.replace(list_access_keys(self.store))
        self._last_full_load = time.monotonic()

    def secret_for(self, access_key_id: str) -> str | None:
        """The secret of an active key; a miss reads the store at most every few seconds."""
        key = self._by_id.get(access_key_id)
        if key is None:
            key = self._fetch(access_key_id)
        return key.secret_access_key if key is not None else None

    def by_secret(self, secret: str) -> AccessKey | None:
        key = self._by_secret.get(secret)
        if key is None and time.monotonic() - self._last_full_load > _MISS_RETRY_S:
            self.reload()
            key = self._by_secret.get(secret)
        return key

    def _fetch(self, access_key_id: str) -> AccessKey | None:
        now = time.monotonic()
        if now - self._missed.get(access_key_id, 0.0) < _MISS_RETRY_S:
            return None
        key = load_access_key(self.store, access_key_id)
        if key is None or key.status != "Active":
            if len(self._missed) > 10_000:
                self._missed.clear()
            self._missed[access_key_id] = now
            return None
        self.add(key)
        return key


class Authenticator:
    """Checks one request's credentials; `enabled=False` is CAIRN_GATEWAY_AUTH=none."""

    def __init__(self, ring: KeyRing, *, enabled: bool, max_skew_s: float = 900.0) -> None:
        self.ring = ring
        self.enabled = enabled
        self.sigv4 = SigV4Verifier(ring.secret_for, max_skew_s=max_skew_s)

    def authenticate(
        self,
        *,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> str | None:
        """The access key id of the caller (None when auth is off); 401/403 errors otherwise."""
        if not self.enabled:
            return None
        authorization = headers.get("authorization")
        if not authorization:
            if not len(self.ring):
                raise Unauthenticated(
                    "no access key exists yet: create one with POST /admin/keys "
                    "(`cairn keys create`), or run the gateway with CAIRN_GATEWAY_AUTH=none"
                )
            raise Unauthenticated(
                "missing credentials: sign the request with SigV4 using a Cairn access key, "
                "or send Authorization: Bearer <access_key_id>:<secret>"
            )
        if authorization.startswith("AWS4-"):
            return self.sigv4.verify(
                method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=body
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("unsupported Authorization scheme: use SigV4 or Bearer")
        return self._bearer(token.strip())

    def _bearer(self, token: str) -> str:
        key_id, sep, secret = token.partition(":")
        if sep:
            expected = self.ring.secret_for(key_id)
            if expected is not None and hmac.compare_digest(expected.encode(), secret.encode()):
                return key_id
            raise Forbidden("invalid access key id or secret")
        key = self.ring.by_secret(token)
        if key is None:
            raise Forbidden("invalid access key")
        return key.access_key_id
