"""`file://` adapter: a local directory as an object store, the embedded default.

Writes are atomic (temp file in the target's folder, fsync, rename) and every write of a key holds
an exclusive `flock` on a lock file striped by key, so create-only and compare-and-swap are correct
across threads and processes on one machine. ETags are the hex MD5 of the content, as S3 gives for
single-part uploads; a sidecar caches it, trusted only while the file's inode, size and mtime match.

Names starting with `.cairn-` are reserved for temp files and metadata and are never keys.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cairn.errors import Conflict, InvalidInput, ObjectNotFound, PreconditionFailed
from cairn.store.base import ObjectInfo, ObjectStore, check_key, check_range

RESERVED_PREFIX = ".cairn-"
_TMP_PREFIX = ".cairn-tmp-"
_META_DIR = ".cairn-meta"
_LOCK_STRIPES = 256
_COPY_CHUNK = 1 << 20
_DEFAULT_CONTENT_TYPE = "application/octet-stream"


def _fsync_dir(path: Path) -> None:
    """Make a rename or link in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(stat_result: os.stat_result) -> datetime:
    return datetime.fromtimestamp(stat_result.st_mtime_ns / 1e9, tz=UTC)


class LocalObjectStore(ObjectStore):
    """Object store in a local directory; safe for many threads and processes on one machine."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve(strict=True)
        self.url = self.root.as_uri()
        self._meta = self.root / _META_DIR
        (self._meta / "locks").mkdir(parents=True, exist_ok=True)
        (self._meta / "etags").mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    # Paths, locks and the ETag cache ---------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file for `key`, refusing reserved names and anything resolving outside the root."""
        check_key(key)
        if any(part.startswith(RESERVED_PREFIX) for part in key.split("/")):
            raise InvalidInput(f"object key {key!r} uses the reserved prefix {RESERVED_PREFIX!r}")
        path = self.root / key
        # A symlinked folder or file inside the root must not lead out of it.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidInput(f"object key {key!r} resolves outside the store")
        return path

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """Exclusive lock for writers of `key`; a fresh open per call so threads exclude too."""
        stripe = int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") % _LOCK_STRIPES
        fd = os.open(self._meta / "locks" / f"{stripe:03d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _sidecar(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self._meta / "etags" / digest[:2] / f"{digest}.json"

    def _write_sidecar(self, key: str, st: os.stat_result, etag: str, content_type: str) -> None:
        sidecar = self._sidecar(key)
        sidecar.parent.mkdir(exist_ok=True)
        record = {
            "key": key,
            "ino": st.st_ino,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "etag": etag,
            "content_type": content_type,
        }
        tmp = sidecar.with_name(f"{_TMP_PREFIX}{os.getpid()}-{sidecar.name}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, sidecar)

    def _read_sidecar(self, key: str, st: os.stat_result) -> dict[str, Any] | None:
        """The cached record, only if it still describes this very file."""
        try:
            record: dict[str, Any] = json.loads(self._sidecar(key).read_text())
        except (OSError, ValueError):
            return None
        if (record.get("key"), record.get("ino"), record.get("size"), record.get("mtime_ns")) != (
            key,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
        ):
            return None
        return record

    def _info_from_fd(self, key: str, fd: int) -> ObjectInfo:
        """Info for the open file `fd`, hashing it only when the sidecar is stale."""
        st = os.fstat(fd)
        record = self._read_sidecar(key, st)
        if record is not None:
            etag, content_type = str(record["etag"]), str(record["content_type"])
        else:
            md5 = hashlib.md5(usedforsecurity=False)
            offset = 0
            while chunk := os.pread(fd, _COPY_CHUNK, offset):
                md5.update(chunk)
                offset += len(chunk)
            etag, content_type = md5.hexdigest(), _DEFAULT_CONTENT_TYPE
        return ObjectInfo(key, st.st_size, etag, _mtime(st), content_type)

    def _open_existing(self, key: str) -> IO[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.url}", key=key) from None
        return handle

    # Writing ---------------------------------------------------------------------------------

    def _write(
        self,
        key: str,
        fill: Callable[[_HashingWriter], object],
        *,
        content_type: str,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Write through a temp file, then link/rename it into place under the key's lock."""
        path = self._path(key)
        for _ in range(5):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                return self._write_once(key, path, fill, content_type, if_none_match, if_match)
            except FileNotFoundError:
                # A concurrent delete pruned the empty folder between mkdir and rename; again.
                continue
            except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
                raise Conflict(
                    f"object key {key!r} clashes with another key used as a folder", key=key
                ) from exc
        raise Conflict(f"could not write {key!r}: its folder keeps disappearing", key=key)

    def _write_once(
        self,
        key: str,
        path: Path,
        fill: Callable[[_HashingWriter], object],
        content_type: str,
        if_none_match: bool,
        if_match: str | None,
    ) -> ObjectInfo:
        tmp = path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}-{path.name}")
        try:
            with tmp.open("xb") as handle:
                md5 = _HashingWriter(handle)
                fill(md5)
                handle.flush()
                os.fsync(handle.fileno())
            etag = md5.hexdigest()
            with self._key_lock(key):
                if if_match is not None:
                    self._check_etag(key, path, if_match)
                if if_none_match and os.path.lexists(path):
                    raise PreconditionFailed(f"object {key!r} already exists", key=key)
                tmp_stat = tmp.stat()
                self._write_sidecar(key, tmp_stat, etag, content_type)
                if if_none_match:
                    try:
                        # link fails if the target exists, even against writers that skip the lock.
                        os.link(tmp, path)
                    except FileExistsError:
                        raise PreconditionFailed(
                            f"object {key!r} already exists", key=key
                        ) from None
                else:
                    os.replace(tmp, path)
                _fsync_dir(path.parent)
            return ObjectInfo(key, tmp_stat.st_size, etag, _mtime(tmp_stat), content_type)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _check_etag(self, key: str, path: Path, expected: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise PreconditionFailed(f"object {key!r} does not exist", key=key) from None
        try:
            current = self._info_from_fd(key, fd).etag
        finally:
            os.close(fd)
        if current != expected.strip('"'):
            raise PreconditionFailed(
                f"object {key!r} changed (etag {current}, expected {expected})", key=key
            )

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = _DEFAULT_CONTENT_TYPE,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        return self._write(
            key,
            lambda out: out.write(data),
            content_type=content_type,
            if_none_match=if_none_match,
            if_match=if_match,
        )

    def put_file(
        self, key: str, path: Path, *, content_type: str = _DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        with path.open("rb") as source:

            def copy(out: _HashingWriter) -> None:
                source.seek(0)  # the write may be retried
                while chunk := source.read(_COPY_CHUNK):
                    out.write(chunk)

            return self._write(key, copy, content_type=content_type)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._key_lock(key):
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return
            except IsADirectoryError:
                return  # only a folder of other keys lives there
            with contextlib.suppress(FileNotFoundError):
                self._sidecar(key).unlink()
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, folder: Path) -> None:
        while folder != self.root:
            try:
                folder.rmdir()
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return
                raise
            folder = folder.parent

    # Reading ---------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        with self._open_existing(key) as handle:
            return handle.read()

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        with self._open_existing(key) as handle:
            data = handle.read()
            st = os.fstat(handle.fileno())
        record = self._read_sidecar(key, st)
        content_type = str(record["content_type"]) if record else _DEFAULT_CONTENT_TYPE
        # The bytes in hand are the truth; hashing them costs less than reading them did.
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return data, ObjectInfo(key, len(data), etag, _mtime(st), content_type)

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        with self._open_existing(key) as source:
            info = self._info_from_fd(key, source.fileno())
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.part")
            try:
                with tmp.open("xb") as out:
                    while chunk := source.read(_COPY_CHUNK):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        return info

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        handle = self._open_existing(key)  # opened now, so a missing key fails at the call

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(chunk_size):
                    yield chunk

        return chunks()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        check_range(start, end)
        with self._open_existing(key) as handle:
            handle.seek(start)
            return handle.read(end - start)

    def stat(self, key: str) -> ObjectInfo:
        with self._open_existing(key) as handle:
            return self._info_from_fd(key, handle.fileno())

    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        folder_part, _, _ = prefix.rpartition("/")
        if folder_part:
            check_key(folder_part)
        start = self.root / folder_part if folder_part else self.root
        if not start.resolve().is_relative_to(self.root):
            raise InvalidInput(f"prefix {prefix!r} resolves outside the store")
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [name for name in dirnames if not name.startswith(RESERVED_PREFIX)]
            relative = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if relative == "." else f"{relative}/"
            for name in filenames:
                key = base + name
                if name.startswith(RESERVED_PREFIX) or not key.startswith(prefix):
                    continue
                if not recursive and "/" in key[len(prefix) :]:
                    continue
                keys.append(key)
        for key in sorted(keys):
            try:
                yield self.stat(key)
            except (ObjectNotFound, InvalidInput):
                continue  # deleted while listing, or a symlink leading out of the store

    def presigned_get_url(self, key: str, expires_s: int = 3600) -> str:
        """A `file://` URI; local files need no signature and do not expire."""
        return self._path(key).as_uri()

    def presigned_put_url(self, key: str, expires_s: int = 3600) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not support presigned PUT URLs")


class _HashingWriter:
    """File-like wrapper computing the MD5 of what passes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._md5 = hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes) -> int:
        self._md5.update(data)
        return self._handle.write(data)

    def hexdigest(self) -> str:
        return self._md5.hexdigest()
