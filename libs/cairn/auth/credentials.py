"""The user's own credential on this machine: `<home>/credentials.json`, mode 0600."""

from __future__ import annotations

import json
import os
from pathlib import Path

CREDENTIALS_FILE = "credentials.json"


def credentials_path(home: Path) -> Path:
    return home / CREDENTIALS_FILE


def save_home_credential(home: Path, token: str, *, name: str) -> Path:
    """Write the token readable by its owner only (create or replace)."""
    path = credentials_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"token": token, "name": name}, handle)
    os.chmod(path, 0o600)
    return path


def load_home_credential(home: Path) -> str | None:
    """The token `<key_id>:<secret>` saved in the home, or None."""
    try:
        data = json.loads(credentials_path(home).read_text())
    except (FileNotFoundError, ValueError):
        return None
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None
