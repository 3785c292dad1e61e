"""Cairn access keys: what guards the inference gateway (SigV4 or Bearer), and how to make one.

A key is an id (`CKIA...`, shaped like an AWS access key id so SageMaker clients take it) and a
secret. SigV4 needs the verifier to know the secret, so the gateway stores it (like AWS does) under
`gateway/keys/<access_key_id>.json`: the object store is inside the platform's trust boundary.

`create_access_key(store)` writes one directly (embedded mode, tests); `request_access_key(url)`
asks a running gateway (`POST /admin/keys`), which is what `cairn keys create` calls.
"""

from __future__ import annotations

import re
import secrets
import string
from datetime import datetime
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from cairn.contracts.envelope import utc_now
from cairn.errors import CairnError, InvalidInput, ObjectNotFound
from cairn.store.base import ObjectStore

KEYS_PREFIX = "gateway/keys/"
_ID_ALPHABET = string.ascii_uppercase + string.digits
_KEY_ID = re.compile(r"^CKIA[A-Z0-9]{16}$")


class AccessKey(BaseModel):
    """One access key pair; `bearer_token` is what curl users send as `Authorization: Bearer`."""

    model_config = ConfigDict(extra="ignore")

    access_key_id: str
    secret_access_key: str
    description: str = ""
    status: Literal["Active", "Inactive"] = "Active"
    created_at: datetime = Field(default_factory=utc_now)

    @property
    def bearer_token(self) -> str:
        return f"{self.access_key_id}:{self.secret_access_key}"


def is_access_key_id(value: str) -> bool:
    return bool(_KEY_ID.match(value))


def new_access_key(description: str = "") -> AccessKey:
    """A fresh random key pair (not stored)."""
    key_id = "CKIA" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
    return AccessKey(
        access_key_id=key_id,
        secret_access_key=secrets.token_urlsafe(30),
        description=description,
    )


def key_path(access_key_id: str) -> str:
    if not is_access_key_id(access_key_id):
        raise InvalidInput(f"{access_key_id!r} is not a Cairn access key id")
    return f"{KEYS_PREFIX}{access_key_id}.json"


def create_access_key(store: ObjectStore, description: str = "") -> AccessKey:
    """Generate a key and store it create-only (a colliding id is practically impossible)."""
    key = new_access_key(description)
    store.put_bytes(
        key_path(key.access_key_id),
        key.model_dump_json().encode(),
        content_type="application/json",
        if_none_match=True,
    )
    return key


def load_access_key(store: ObjectStore, access_key_id: str) -> AccessKey | None:
    """The stored key, or None when there is no such (well-formed) id."""
    if not is_access_key_id(access_key_id):
        return None
    try:
        raw = store.get_bytes(key_path(access_key_id))
    except ObjectNotFound:
        return None
    return AccessKey.model_validate_json(raw)


def list_access_keys(store: ObjectStore) -> list[AccessKey]:
    """Every stored key (secrets included: callers decide what to show)."""
    keys: list[AccessKey] = []
    for info in store.list(KEYS_PREFIX):
        if not info.key.endswith(".json"):
            continue
        try:
            keys.append(AccessKey.model_validate_json(store.get_bytes(info.key)))
        except ObjectNotFound:
            continue  # deleted between the listing and the read
    return keys


def delete_access_key(store: ObjectStore, access_key_id: str) -> None:
    store.delete(key_path(access_key_id))


def request_access_key(
    gateway_url: str,
    *,
    api_key: str | None = None,
    description: str = "",
    timeout_s: float = 10.0,
) -> AccessKey:
    """Ask a running gateway for a new key (`POST /admin/keys`); for the CLI and SDK.

    Args:
        gateway_url: e.g. `http://127.0.0.1:8080`.
        api_key: a control-plane key when the gateway runs with `CAIRN_API_KEYS`.
        description: stored with the key, to tell keys apart later.
        timeout_s: HTTP timeout.
    """
    headers = {"X-API-Key": api_key} if api_key else {}
    response = httpx.post(
        gateway_url.rstrip("/") + "/admin/keys",
        json={"description": description},
        headers=headers,
        timeout=timeout_s,
    )
    if response.status_code != 201:
        raise CairnError(
            f"gateway refused to create a key ({response.status_code}): {response.text[:300]}"
        )
    return AccessKey.model_validate(response.json())
