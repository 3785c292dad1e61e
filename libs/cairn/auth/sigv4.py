"""AWS Signature Version 4 verification, so SageMaker runtime clients sign with a Cairn key.

A boto3 user changes only `endpoint_url` and credentials: botocore signs the request exactly as for
AWS (service `sagemaker`, any region) and the kernel recomputes the signature with the stored
secret. The derived signing key is cached per key, day, region and service, so a request costs one
SHA-256 of the body, one of the canonical request and one HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from cairn.errors import Forbidden, Unauthenticated

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

SecretLookup = Callable[[str], str | None]


@dataclass(frozen=True)
class Credential:
    """A parsed SigV4 `Authorization` header: credential scope, signed headers, signature."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(value: str) -> Credential:
    """Parse a SigV4 Authorization header; Unauthenticated when it is malformed."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise Unauthenticated(f"unsupported signature algorithm {algorithm!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, field_value = part.strip().partition("=")
        fields[name] = field_value
    try:
        key_id, date, region, service, terminal = fields["Credential"].split("/")
        signed = tuple(fields["SignedHeaders"].split(";"))
        signature = fields["Signature"]
    except (KeyError, ValueError):
        raise Unauthenticated("malformed AWS4-HMAC-SHA256 Authorization header") from None
    if terminal != "aws4_request" or not signature:
        raise Unauthenticated("malformed AWS4-HMAC-SHA256 credential scope")
    return Credential(key_id, date, region, service, signed, signature)


def canonical_uri(raw_path: str) -> str:
    """The path as botocore signs it for non-S3 services: normalised, then quoted again."""
    normalized = posixpath.normpath(raw_path) if raw_path else "/"
    if raw_path.endswith("/") and normalized != "/":
        normalized += "/"
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    return quote(normalized, safe="/~")


def canonical_query(raw_query: str) -> str:
    """Query pairs sorted as sent (botocore signs the already-encoded components)."""
    if not raw_query:
        return ""
    pairs = []
    for pair in raw_query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((key, value))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class SigV4Verifier:
    """Verifies requests signed with SigV4; `lookup(access_key_id)` returns the secret or None."""

    def __init__(self, lookup: SecretLookup, *, max_skew_s: float = 900.0) -> None:
        self._lookup = lookup
        self._max_skew_s = max_skew_s
        self._signing_keys: dict[tuple[str, str, str, str, str], bytes] = {}

    def signing_key(self, secret: str, credential: Credential) -> bytes:
        cache_key = (
            credential.access_key_id,
            secret,
            credential.date,
            credential.region,
            credential.service,
        )
        key = self._signing_keys.get(cache_key)
        if key is None:
            key = _hmac(("AWS4" + secret).encode(), credential.date)
            for part in (credential.region, credential.service, "aws4_request"):
                key = _hmac(key, part)
            if len(self._signing_keys) > 10_000:  # keys of past days, rotated secrets
                self._signing_keys.clear()
            self._signing_keys[cache_key] = key
        return key

    def verify(
        self,
        *,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime | None = None,
    ) -> str:
        """Check the signature of one request; returns the access key id that signed it.

        Args:
            method: HTTP method.
            raw_path: the path exactly as sent (still percent-encoded).
            raw_query: the query string as sent.
            headers: lower-case header names to values (repeated headers joined with ",").
            body: the request body.
            now: the clock (tests).

        Raises:
            Unauthenticated: malformed header, unknown key id.
            Forbidden: wrong signature, expired timestamp.
        """
        credential = parse_authorization(headers.get("authorization", ""))
        secret = self._lookup(credential.access_key_id)
        if secret is None:
            raise Forbidden(f"unknown access key id {credential.access_key_id}")
        amz_date = headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise Unauthenticated("SigV4 request has no valid X-Amz-Date header") from None
        current = now or datetime.now(UTC)
        if abs((current - signed_at).total_seconds()) > self._max_skew_s:
            raise Forbidden("signature expired: X-Amz-Date is too far from the server's clock")
        if not amz_date.startswith(credential.date):
            raise Forbidden("credential scope date does not match X-Amz-Date")
        payload_hash = hashlib.sha256(body).hexdigest()
        declared = headers.get("x-amz-content-sha256")
        if declared is not None and declared not in (payload_hash, UNSIGNED_PAYLOAD):
            raise Forbidden("x-amz-content-sha256 does not match the body")
        if "host" not in credential.signed_headers:
            raise Forbidden("SigV4 must sign the host header")
        canonical_headers = "".join(
            f"{name}:{' '.join(headers.get(name, '').split())}\n"
            for name in credential.signed_headers
        )
        canonical_request = "\n".join(
            (
                method.upper(),
                canonical_uri(raw_path),
                canonical_query(raw_query),
                canonical_headers,
                ";".join(credential.signed_headers),
                declared if declared == UNSIGNED_PAYLOAD else payload_hash,
            )
        )
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                amz_date,
                credential.scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            )
        )
        expected = hmac.new(
            self.signing_key(secret, credential), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, credential.signature):
            raise Forbidden(
                "the request signature does not match: check the access key secret and that "
                "nothing rewrote the request between the client and the gateway"
            )
        return credential.access_key_id
