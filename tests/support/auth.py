"""Credentials for tests: real keys in the test's own store, as `cairn keys create` makes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.auth.credentials import load_home_credential
from cairn.auth.keys import issue_key
from cairn.auth.scopes import Scope
from cairn.auth.sealing import secret_box
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from cryptography.fernet import Fernet

PLATFORM_KEY = Fernet.generate_key().decode()


def auth_settings(**overrides: Any) -> CairnSettings:
    """Settings with a fixed platform key, so every part of one test seals with the same key."""
    overrides.setdefault("platform_key", PLATFORM_KEY)
    overrides.setdefault("otel_exporter", "none")
    overrides.setdefault("kafka_bootstrap_servers", "127.0.0.1:9")
    return CairnSettings(**overrides)


def token_for(
    store: ObjectStore,
    settings: CairnSettings,
    scopes: list[Scope],
    *,
    name: str = "tester",
    endpoints: list[str] | None = None,
) -> str:
    """A new key's `key_id:secret` token."""
    issued = issue_key(
        store,
        secret_box(settings),
        name=name,
        scopes=scopes,
        created_by="tests",
        endpoints=endpoints,
    )
    return issued.token


def scoped_headers(
    store: ObjectStore,
    settings: CairnSettings,
    scopes: list[Scope],
    *,
    name: str = "tester",
    endpoints: list[str] | None = None,
) -> dict[str, str]:
    """`Authorization: Bearer` headers for a new key holding `scopes`."""
    token = token_for(store, settings, scopes, name=name, endpoints=endpoints)
    return {"Authorization": f"Bearer {token}"}


def admin_headers(
    store: ObjectStore, settings: CairnSettings, *, name: str = "admin"
) -> dict[str, str]:
    """Headers for a new admin key."""
    return scoped_headers(store, settings, ["admin"], name=name)


def home_headers(home: Path) -> dict[str, str]:
    """The admin credential `cairn up` saved in a platform's home, as request headers."""
    token = load_home_credential(home)
    assert token is not None, f"no credential in {home}: did `cairn up` start?"
    return {"Authorization": f"Bearer {token}"}
