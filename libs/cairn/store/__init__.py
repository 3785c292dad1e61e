"""Object store: the port, its adapters and `open_store`, which picks one by URL scheme.

file:///abs/dir          LocalObjectStore   (embedded default: <home>/store)
s3://bucket[/prefix]     S3ObjectStore      (MinIO / AWS; endpoint and keys from settings)
memory://[name]          InMemoryObjectStore (tests; one shared store per name per process)
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from urllib.request import url2pathname

from cairn.errors import ConfigError
from cairn.settings import CairnSettings, get_settings
from cairn.store.base import ObjectInfo, ObjectStore, check_key
from cairn.store.local import LocalObjectStore
from cairn.store.memory import InMemoryObjectStore
from cairn.store.s3 import S3ObjectStore

__all__ = [
    "InMemoryObjectStore",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "check_key",
    "open_store",
]

_named_memory_stores: dict[str, InMemoryObjectStore] = {}
_named_memory_lock = threading.Lock()

_TRUE = {"1", "true", "yes", "on"}


def open_store(url: str | None = None, settings: CairnSettings | None = None) -> ObjectStore:
    """The object store named by `url` (default: the settings' store URL).

    Args:
        url: `file://`, `s3://` or `memory://` URL; None reads `settings.resolved_store_url()`.
        settings: where S3 endpoint, keys and region come from; None reads the environment.

    Raises:
        ConfigError: the URL's scheme or shape is not one Cairn knows.
    """
    settings = settings or get_settings()
    url = url or settings.resolved_store_url()
    parsed = urlsplit(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"file:// store URL must name a local path, got {url!r}")
        return LocalObjectStore(Path(url2pathname(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"s3:// store URL needs a bucket, got {url!r}")
        options = parse_qs(parsed.query)
        create_bucket = options.get("create_bucket", ["true"])[-1].lower() in _TRUE
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        return S3ObjectStore(
            parsed.netloc,
            unquote(parsed.path).strip("/"),
            endpoint=settings.s3_endpoint or None,
            access_key=settings.s3_access_key or None,
            secret_key=secret,
            region=settings.s3_region,
            create_bucket=create_bucket,
        )
    if parsed.scheme == "memory":
        name = parsed.netloc + parsed.path
        if not name:
            return InMemoryObjectStore()
        with _named_memory_lock:
            return _named_memory_stores.setdefault(name, InMemoryObjectStore(name))
    raise ConfigError(f"unknown object store URL scheme in {url!r} (file://, s3://, memory://)")
