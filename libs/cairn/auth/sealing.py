"""The platform key: seals stored secrets (Fernet) and derives the services' own credentials.

Embedded mode keeps it in `<home>/platform.key` (mode 0600), made by whichever process needs it
first; compose and Kubernetes pass it as a secret (`CAIRN_PLATFORM_KEY` or `..._FILE`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from cairn.errors import ConfigError
from cairn.settings import CairnSettings

PLATFORM_KEY_FILE = "platform.key"


class SecretBox:
    """Seal and open secrets with the platform key; derive per-service signing secrets."""

    def __init__(self, platform_key: bytes) -> None:
        try:
            self._fernet = Fernet(platform_key)
        except ValueError as exc:
            raise ConfigError("the platform key is not a valid Fernet key") from exc
        self._derive_root = hashlib.sha256(b"cairn-service-credentials:" + platform_key).digest()

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ConfigError("a stored secret was sealed with another platform key") from exc

    def service_secret(self, service_name: str) -> str:
        """The HMAC secret a service signs its events with; every holder of the key can check it."""
        return hmac.new(self._derive_root, service_name.encode(), hashlib.sha256).hexdigest()


def platform_key_path(settings: CairnSettings) -> Path:
    if settings.platform_key_file is not None:
        return settings.platform_key_file
    return settings.home / PLATFORM_KEY_FILE


def load_platform_key(settings: CairnSettings, *, create: bool = True) -> bytes:
    """The platform key from the settings, its file, or a new file (create-only, mode 0600)."""
    if settings.platform_key is not None:
        return settings.platform_key.get_secret_value().strip().encode()
    path = platform_key_path(settings)
    if not path.exists() and create and settings.platform_key_file is None:
        _create_key_file(path)
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise ConfigError(f"no platform key at {path} (set CAIRN_PLATFORM_KEY_FILE)") from exc
    if not key:
        raise ConfigError(f"the platform key file {path} is empty")
    return key


def _create_key_file(path: Path) -> None:
    """Write a new key beside `path`, then link it into place: several processes may race here
    and exactly one key wins, never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(Fernet.generate_key())
    try:
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def secret_box(settings: CairnSettings) -> SecretBox:
    return SecretBox(load_platform_key(settings))
