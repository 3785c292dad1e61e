"""The user's credential in the CLI: made by `cairn up` / `cairn demo` on first start, shown once.

It also signs the events the user publishes (`cairn events publish`, the drift demo).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cairn.settings import CairnSettings
from cairn_sdk.credentials import resolve_token, split_token
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from cairn.bus.publish import Signer


def ensure_credential(
    settings: CairnSettings, console: Console, store_url: str | None = None
) -> str | None:
    """Make the home's admin key when it has none the store accepts; print the token once.

    `store_url`: the store the platform runs on (default: the settings'). Returns the new token,
    None when the home's credential still works or auth is off.
    """
    if not settings.auth_enabled:
        return None
    from cairn.auth.bootstrap import ensure_admin_credential
    from cairn.auth.credentials import credentials_path
    from cairn.store import open_store

    store = open_store(store_url or settings.resolved_store_url(), settings)
    token = ensure_admin_credential(settings, store)
    if token is not None:
        saved = escape(str(credentials_path(settings.home.resolve())))
        console.print(
            f"[bold]Admin credential created[/] (shown only now): [bold]{escape(token)}[/]\n"
            f"  saved in {saved} (mode 0600): the CLI and the SDK use it from there (or from "
            "CAIRN_API_KEY). Mint narrower keys with `cairn keys create`.",
            highlight=False,
            soft_wrap=True,
        )
    return token


def user_signer(home: Path | None = None, token: str | None = None) -> Signer | None:
    """The user's credential as an envelope signer (`token`, else CAIRN_API_KEY, else the home's).

    None without a credential; InvalidInput when the credential is not KEY_ID:SECRET.
    """
    from cairn.bus.publish import Signer

    found = token or resolve_token(home)
    if not found:
        return None
    key_id, secret = split_token(found)
    return Signer(key_id, secret)
