"""The user's credential: `CAIRN_API_KEY`, else the one `cairn up` saved in the home.

A credential is one token, `<key_id>:<secret>`. Every request sends it as
`Authorization: Bearer <token>`; signed bus events use its two halves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cairn.errors import InvalidInput

API_KEY_ENV = "CAIRN_API_KEY"


def home_path(home: Path | str | None = None) -> Path:
    """`home`, else CAIRN_HOME, else `.cairn`, resolved."""
    if home is not None:
        return Path(home).resolve()
    from cairn.settings import CairnSettings

    return CairnSettings().home.resolve()


def resolve_token(
    home: Path | str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The token to send: CAIRN_API_KEY, else `<home>/credentials.json`; None when neither."""
    environ = os.environ if env is None else env
    given = (environ.get(API_KEY_ENV) or "").strip()
    if given:
        return given
    from cairn.auth.credentials import load_home_credential

    return load_home_credential(home_path(home))


def bearer_headers(token: str | None) -> dict[str, str]:
    """`Authorization: Bearer <token>` (nothing without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def split_token(token: str) -> tuple[str, str]:
    """(key_id, secret) of `<key_id>:<secret>`; InvalidInput saying what a token looks like."""
    key_id, sep, secret = token.partition(":")
    if not sep or not key_id or not secret:
        raise InvalidInput("a Cairn credential is KEY_ID:SECRET (see `cairn keys create`)")
    return key_id, secret
