"""Signed envelopes: who sent a request on the bus, checked as SigV4 checks an HTTP request.

The sender adds `key_id` and `signature` = hex HMAC-SHA256, keyed by its secret, over the
canonical JSON of the envelope without `signature` (keys sorted, `,`/`:` separators, ASCII). A
user signs with their key (`cairn events publish` and the SDK do it); a service signs with its
own credential, `service:<name>`, whose secret derives from the platform key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cairn.auth.authenticator import principal_of
from cairn.auth.keys import KeyRing
from cairn.auth.principal import Principal
from cairn.auth.sealing import SecretBox
from cairn.contracts.catalogue import EventSpec
from cairn.errors import Forbidden, Unauthenticated

SERVICE_KEY_PREFIX = "service:"


def canonical_bytes(payload: dict[str, Any]) -> bytes:
    unsigned = {name: value for name, value in payload.items() if name != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signature_of(payload: dict[str, Any], secret: str) -> str:
    return hmac.new(secret.encode(), canonical_bytes(payload), hashlib.sha256).hexdigest()


def sign_envelope(payload: dict[str, Any], key_id: str, secret: str) -> dict[str, Any]:
    """The envelope (as JSON-ready dict) with `key_id` and `signature` set."""
    signed = {**payload, "key_id": key_id}
    signed["signature"] = signature_of(signed, secret)
    return signed


class EnvelopeVerifier:
    """Recomputes an envelope's signature with the key ring or the service credentials."""

    def __init__(self, ring: KeyRing, box: SecretBox) -> None:
        self.ring = ring
        self.box = box

    def verify(self, payload: dict[str, Any]) -> Principal:
        """The signing principal; `Unauthenticated` when unsigned, `Forbidden` when it is wrong."""
        key_id, signature = payload.get("key_id"), payload.get("signature")
        if not isinstance(key_id, str) or not isinstance(signature, str) or not key_id:
            raise Unauthenticated("the envelope is not signed (key_id and signature)")
        if key_id.startswith(SERVICE_KEY_PREFIX):
            service = key_id[len(SERVICE_KEY_PREFIX) :]
            secret: str | None = self.box.service_secret(service)
            principal = Principal(name=key_id, key_id=key_id, scopes=frozenset(), kind="service")
        else:
            secret = self.ring.secret_for(key_id)
            key = self.ring.get(key_id)
            if secret is None or key is None:
                raise Forbidden(f"unknown, revoked or expired key {key_id!r}")
            principal = principal_of(key)
        if secret is None or not hmac.compare_digest(signature, signature_of(payload, secret)):
            raise Forbidden(f"the envelope's signature does not match key {key_id!r}")
        return principal

    def authorise(self, spec: EventSpec, payload: dict[str, Any]) -> Principal:
        """The signer of a privileged request, if it may send it: the owner, a listed sender, or
        a key holding the event's `required_scope`; `Forbidden` otherwise."""
        principal = self.verify(payload)
        if principal.kind == "service":
            service = principal.name[len(SERVICE_KEY_PREFIX) :]
            if service == spec.owner or service in spec.senders:
                return principal
            raise Forbidden(f"service {service!r} may not send {spec.type}")
        if not principal.allows(spec.required_scope or "admin"):
            raise Forbidden(
                f"key {principal.key_id} ({principal.name}) lacks scope "
                f"{spec.required_scope!r} for {spec.type}"
            )
        return principal
