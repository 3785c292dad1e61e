"""The first credential: an admin key made on first start, so a fresh install is never open.

`cairn up` / `cairn demo` call `ensure_admin_credential`: when the home has no credential that
the store still accepts, it issues an admin key, saves it in `<home>/credentials.json` (0600) and
returns the token to print once. Compose and Kubernetes pass the token as a secret instead
(`CAIRN_BOOTSTRAP_ADMIN_TOKEN[_FILE]`); every service makes that key at start if it is absent.
"""

from __future__ import annotations

import hashlib
import logging

from cairn.auth.credentials import load_home_credential, save_home_credential
from cairn.auth.keys import ApiKey, KeyRing, is_key_id, issue_key, key_path
from cairn.auth.sealing import SecretBox, secret_box
from cairn.errors import ConfigError, PreconditionFailed
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

log = logging.getLogger("cairn.auth")

ADMIN_NAME = "admin"


def ensure_admin_credential(settings: CairnSettings, store: ObjectStore) -> str | None:
    """Issue the home's admin key if it has none the store accepts; the new token, else None."""
    box = secret_box(settings)
    token = load_home_credential(settings.home)
    if token is not None and _accepted(store, box, token):
        return None
    issued = issue_key(
        store, box, name=ADMIN_NAME, scopes=["admin"], created_by="cairn up",
        description="admin credential made on first start",
    )  # fmt: skip
    save_home_credential(settings.home, issued.token, name=ADMIN_NAME)
    return issued.token


def ensure_bootstrap_key(settings: CairnSettings, store: ObjectStore, box: SecretBox) -> None:
    """Create the admin key named by `CAIRN_BOOTSTRAP_ADMIN_TOKEN[_FILE]`, if set and absent."""
    token = _bootstrap_token(settings)
    if token is None:
        return
    key_id, sep, secret = token.partition(":")
    if not sep or not is_key_id(key_id) or len(secret) < 20:
        raise ConfigError("the bootstrap admin token must be CKIA<16 A-Z0-9>:<secret of 20+ chars>")
    key = ApiKey(
        key_id=key_id,
        name=ADMIN_NAME,
        scopes=["admin"],
        secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
        sealed_secret=box.seal(secret),
        created_by="bootstrap",
        description="admin credential from the deployment's secret",
    )
    try:
        store.put_bytes(
            key_path(key_id),
            key.model_dump_json().encode(),
            content_type="application/json",
            if_none_match=True,
        )
        log.info("created the bootstrap admin key %s", key_id)
    except PreconditionFailed:
        pass  # another replica made it first


def _bootstrap_token(settings: CairnSettings) -> str | None:
    if settings.bootstrap_admin_token is not None:
        return settings.bootstrap_admin_token.get_secret_value().strip()
    if settings.bootstrap_admin_token_file is not None:
        return settings.bootstrap_admin_token_file.read_text().strip()
    return None


def _accepted(store: ObjectStore, box: SecretBox, token: str) -> bool:
    key_id, _, secret = token.partition(":")
    key = KeyRing(store, box).get(key_id)
    return key is not None and key.matches(secret)
