"""`memory://` adapter: a thread-safe dict with the same semantics as the real stores, for tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cairn.errors import ObjectNotFound, PreconditionFailed
from cairn.store.base import ObjectInfo, ObjectStore, check_key, check_range


@dataclass(frozen=True)
class _Stored:
    data: bytes
    info: ObjectInfo


class InMemoryObjectStore(ObjectStore):
    """Objects kept in process memory; conditional writes are atomic under one lock."""

    def __init__(self, name: str = "") -> None:
        self.url = f"memory://{name}"
        self._objects: dict[str, _Stored] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InMemoryObjectStore({self.url!r})"

    def _get(self, key: str) -> _Stored:
        check_key(key)
        with self._lock:
            stored = self._objects.get(key)
        if stored is None:
            raise ObjectNotFound(f"no object {key!r} in {self.url}", key=key)
        return stored

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        check_key(key)
        data = bytes(data)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        info = ObjectInfo(key, len(data), etag, datetime.now(UTC), content_type)
        with self._lock:
            current = self._objects.get(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"object {key!r} already exists", key=key)
            if if_match is not None and (
                current is None or current.info.etag != if_match.strip('"')
            ):
                raise PreconditionFailed(f"object {key!r} changed or is missing", key=key)
            self._objects[key] = _Stored(data, info)
        return info

    def get_bytes(self, key: str) -> bytes:
        return self._get(key).data

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        stored = self._get(key)
        return stored.data, stored.info

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        return self.put_bytes(key, path.read_bytes(), content_type=content_type)

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        stored = self._get(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.part")
        try:
            tmp.write_bytes(stored.data)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return stored.info

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        data = self._get(key).data
        return (data[start : start + chunk_size] for start in range(0, len(data), chunk_size))

    def get_range(self, key: str, start: int, end: int) -> bytes:
        check_range(start, end)
        return self._get(key).data[start:end]

    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        with self._lock:
            snapshot = sorted(
                (key, stored.info)
                for key, stored in self._objects.items()
                if key.startswith(prefix)
            )
        for key, info in snapshot:
            if recursive or "/" not in key[len(prefix) :]:
                yield info

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def stat(self, key: str) -> ObjectInfo:
        return self._get(key).info

    def presigned_get_url(self, key: str, expires_s: int = 3600) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not serve presigned URLs")

    def presigned_put_url(self, key: str, expires_s: int = 3600) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not serve presigned URLs")
