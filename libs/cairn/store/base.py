"""The object-store port: every durable byte in Cairn goes through one of its adapters.

Keys are `/`-separated relative paths (`models/credit/3/manifest.json`); no leading `/`, no `..`.
Adapters: `file://` (local directory, the embedded default) and `s3://` (MinIO / AWS, via `minio`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cairn.errors import InvalidInput


@dataclass(frozen=True)
class ObjectInfo:
    """What `stat` and `list` say about one object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None
    content_type: str | None = None


def check_range(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise InvalidInput(f"invalid byte range [{start}, {end})")


def check_key(key: str) -> str:
    """Reject keys that could escape the store's root or are ambiguous."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidInput(f"invalid object key {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in ("", ".", ".."):
        raise InvalidInput(f"invalid object key {key!r}")
    return key


class ObjectStore(abc.ABC):
    """Port for blob storage with conditional writes (create-only and compare-and-swap on ETag).

    Conditional writes raise `PreconditionFailed`; reads of a missing key raise `ObjectNotFound`.
    """

    url: str

    @abc.abstractmethod
    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Write `data` under `key`.

        Args:
            key: object key.
            data: the bytes.
            content_type: stored with the object.
            if_none_match: create only; PreconditionFailed if the key exists (`If-None-Match: *`).
            if_match: replace only if the current ETag equals this one, else PreconditionFailed.
        """

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        """Bytes and their ETag, read consistently (for read-modify-write)."""

    @abc.abstractmethod
    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Upload a local file without reading it whole into memory."""

    @abc.abstractmethod
    def get_file(self, key: str, path: Path) -> ObjectInfo:
        """Download an object to a local file (written atomically)."""

    @abc.abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream an object's bytes."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, end: int) -> bytes:
        """The bytes `[start, end)` of an object, without reading the rest of it.

        A range past the object's end is cut at the end (empty when `start` is at or past it),
        as an HTTP range request is, so a reader can ask for a block without knowing the size.

        Args:
            key: object key.
            start: first byte, from 0.
            end: one past the last byte; `end >= start`.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing key is not an error."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool:
        from cairn.errors import ObjectNotFound

        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    @abc.abstractmethod
    def presigned_get_url(self, key: str, expires_s: int = 3600) -> str: ...

    @abc.abstractmethod
    def presigned_put_url(self, key: str, expires_s: int = 3600) -> str: ...

    def uri(self, key: str) -> str:
        """A URI naming this object (`s3://bucket/prefix/key`, `file:///dir/key`)."""
        return f"{self.url.rstrip('/')}/{check_key(key)}"
