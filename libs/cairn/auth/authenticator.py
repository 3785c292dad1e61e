"""Turn a request's credential into a Principal: SigV4, `Bearer key_id:secret` or `X-API-Key`.

One class for every HTTP surface (FastAPI routes through `cairn.auth.http`, the gateway's plain
ASGI fast path directly), so there is one place where a credential is accepted or refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from cairn.auth.keys import ApiKey, KeyRing
from cairn.auth.principal import AUTH_DISABLED, Principal
from cairn.auth.sigv4 import SigV4Verifier
from cairn.errors import Forbidden, Unauthenticated


def principal_of(key: ApiKey) -> Principal:
    return Principal(
        name=key.name,
        key_id=key.key_id,
        scopes=frozenset(key.scopes),
        endpoints=frozenset(key.endpoints),
    )


class Authenticator:
    """Checks one request's credentials against the key ring; `enabled=False` lets all in."""

    def __init__(self, ring: KeyRing, *, enabled: bool = True, max_skew_s: float = 900.0) -> None:
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
    ) -> Principal:
        """The caller: `Unauthenticated` (401) without a credential, `Forbidden` (403) if bad.

        Args:
            method: HTTP method.
            raw_path: the path as sent (percent-encoded), for SigV4.
            raw_query: the query string as sent, for SigV4.
            headers: lower-case header names.
            body: the request body (SigV4 signs its hash).
        """
        if not self.enabled:
            return AUTH_DISABLED
        authorization = headers.get("authorization", "")
        if authorization.startswith("AWS4-"):
            key_id = self.sigv4.verify(
                method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=body
            )
            return self._principal(key_id)
        token = headers.get("x-api-key", "")
        if not token and authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer":
                raise Unauthenticated("unsupported Authorization scheme: use Bearer or SigV4")
        token = token.strip()
        if not token:
            raise Unauthenticated(
                "missing credentials: send Authorization: Bearer <key_id>:<secret> "
                "(`cairn keys create`), X-API-Key, or sign with SigV4"
            )
        return self.check_token(token)

    def check_token(self, token: str) -> Principal:
        key_id, sep, secret = token.partition(":")
        key = self.ring.get(key_id) if sep else None
        if key is None or not key.matches(secret):
            raise Forbidden("invalid, revoked or expired key")
        return principal_of(key)

    def _principal(self, key_id: str) -> Principal:
        key = self.ring.get(key_id)
        if key is None:
            raise Forbidden("invalid, revoked or expired key")
        return principal_of(key)
