"""How batch workers reach the gateway: where it is, and the batch service's own `invoke` key.

A job against an endpoint is checked once, when it is created: the requesting principal must hold
`invoke` on that endpoint. The workers then call the gateway as the batch service, with a key the
service issues itself at start (`ensure_invoke_key`), like any other key in the key ring: scope
`invoke` on every endpoint, named `batch-transform`, its secret sealed with the platform key. The
store points to it from `batch/gateway-key.json`; any batch process holding the platform key opens
the sealed secret. Revoking the key is safe: the next process that finds the pointer's key inactive
issues a new one and moves the pointer (a conditional write, so racing replicas agree on one).

The gateway's URL is `CAIRN_BATCH_GATEWAY_URL`; in the embedded runtime (`cairn up`) the gateway's
entry in `<home>/runtime.json` when the setting is empty.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from cairn.auth.keys import ApiKey, issue_key, load_key, revoke_key
from cairn.auth.sealing import SecretBox
from cairn.errors import CairnError, ConfigError, ObjectNotFound, PreconditionFailed
from cairn.ports import Authority
from cairn.runtime.state import pid_alive, read_state
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from pydantic import BaseModel, ValidationError

from services.batch.endpoint import GatewayUnavailable

log = logging.getLogger("cairn.batch.access")

KEY_POINTER = "batch/gateway-key.json"
KEY_NAME = "batch-transform"
GATEWAY_SERVICE = "gateway"
SERVICE_PRINCIPAL = "service:batch"


class KeyPointer(BaseModel):
    """`batch/gateway-key.json`: which key of the ring the batch workers invoke with."""

    key_id: str


@dataclass(frozen=True)
class InvokeKey:
    """The key the workers invoke with, its `key_id:secret` token, and whether it is new."""

    key: ApiKey
    token: str
    issued: bool


def ensure_invoke_key(store: ObjectStore, box: SecretBox) -> InvokeKey:
    """The batch service's invoke key: the one the pointer names if it is active and sealed with
    this platform key, else a new one the pointer is moved to."""
    for _ in range(10):
        pointer, etag = _read_pointer(store)
        usable = _usable(store, box, pointer.key_id) if pointer is not None else None
        if usable is not None:
            return usable
        issued = issue_key(
            store,
            box,
            name=KEY_NAME,
            scopes=["invoke"],
            created_by=SERVICE_PRINCIPAL,
            description="batch transform workers invoke endpoints with it",
        )
        body = KeyPointer(key_id=issued.key.key_id).model_dump_json().encode()
        try:
            store.put_bytes(
                KEY_POINTER,
                body,
                content_type="application/json",
                if_none_match=etag is None,
                if_match=etag,
            )
        except PreconditionFailed:  # another process moved the pointer first: use its key
            revoke_key(store, issued.key.key_id)
            continue
        log.info("issued the batch service's invoke key %s", issued.key.key_id)
        return InvokeKey(issued.key, issued.token, issued=True)
    raise ConfigError(f"could not agree on the batch service's invoke key ({KEY_POINTER})")


async def issue_key_at_start(store: ObjectStore, box: SecretBox, authority: Authority) -> None:
    """Make sure the invoke key exists when the service starts; a key issued is audited.

    A failure here is only logged: a worker that needs the key issues it then.
    """
    try:
        found = await asyncio.to_thread(ensure_invoke_key, store, box)
    except CairnError as error:
        log.warning("the batch service's invoke key is not ready: %s", error)
        return
    if found.issued:
        key = found.key
        await authority.audit(
            action="key.create",
            resource=f"/admin/keys/{key.key_id}",
            principal=SERVICE_PRINCIPAL,
            details={"name": key.name, "scopes": list(key.scopes), "pointer": KEY_POINTER},
        )


def _usable(store: ObjectStore, box: SecretBox, key_id: str) -> InvokeKey | None:
    key = load_key(store, key_id)
    if key is None or not key.is_active():
        return None
    try:
        secret = box.open(key.sealed_secret)
    except ConfigError:  # sealed with a platform key this platform no longer holds
        log.warning("the invoke key %s cannot be opened with this platform key", key_id)
        return None
    return InvokeKey(key, f"{key.key_id}:{secret}", issued=False)


def _read_pointer(store: ObjectStore) -> tuple[KeyPointer | None, str | None]:
    try:
        raw, info = store.get_with_info(KEY_POINTER)
    except ObjectNotFound:
        return None, None
    try:
        return KeyPointer.model_validate_json(raw), info.etag
    except ValidationError:
        log.error("replacing the unreadable %s", KEY_POINTER)
        return None, info.etag


class GatewayAccess:
    """The gateway's URL and the batch service's credential, for the workers' endpoint client."""

    def __init__(
        self, store: ObjectStore, box: SecretBox, settings: CairnSettings, gateway_url: str | None
    ) -> None:
        self.store = store
        self.box = box
        self.settings = settings
        self.gateway_url = gateway_url
        self._token: str | None = None
        self._lock = threading.Lock()

    def url(self) -> str:
        """`CAIRN_BATCH_GATEWAY_URL`, else the gateway the embedded runtime on the home runs."""
        if self.gateway_url:
            return self.gateway_url.rstrip("/")
        state = read_state(self.settings.home.resolve())
        if state is not None and pid_alive(state.supervisor_pid):
            for service in state.services:
                if service.name == GATEWAY_SERVICE:
                    return service.url.rstrip("/")
        raise GatewayUnavailable(
            "no gateway URL: set CAIRN_BATCH_GATEWAY_URL (or run the platform with `cairn up`)"
        )

    def token(self) -> str:
        """`key_id:secret` of the batch service's invoke key (issued if there is none)."""
        with self._lock:
            if self._token is None:
                self._token = ensure_invoke_key(self.store, self.box).token
            return self._token

    def forget(self) -> None:
        """Read the key again next time (the gateway refused it: revoked or replaced)."""
        with self._lock:
            self._token = None
