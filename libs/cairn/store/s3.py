"""`s3://bucket[/prefix]` adapter for MinIO and AWS S3, through the `minio` client.

Large files go up as multipart uploads (minio's `fput_object`). Conditional writes send
`If-None-Match: *` / `If-Match: <etag>` on a single PUT; S3 answers 412 (or 409 when two
conditional writes race), which becomes `PreconditionFailed`.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.credentials.providers import (
    ChainedProvider,
    EnvAWSProvider,
    EnvMinioProvider,
    IamAwsProvider,
    Provider,
)
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name
from urllib3.util.retry import Retry

from cairn.errors import CairnError, ConfigError, ObjectNotFound, PreconditionFailed, Unavailable
from cairn.store.base import ObjectInfo, ObjectStore, check_key, check_range

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"}
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


def _http_client(*, retry_writes: bool) -> urllib3.PoolManager:
    """A pool whose retries never resend a conditional PUT whose answer was lost.

    Resending one that had landed would come back 412 and make a caller redo work already done.
    """
    retry_methods = {"GET", "HEAD", "DELETE", "PUT", "POST"} if retry_writes else {"GET", "HEAD"}
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10.0, read=300.0),
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(
            total=5,
            connect=3,
            read=2 if retry_writes else 0,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
            allowed_methods=frozenset(retry_methods),
            raise_on_status=False,
        ),
    )


def _etag(raw: str | None) -> str:
    return (raw or "").strip('"')


class S3ObjectStore(ObjectStore):
    """Objects in one bucket (under an optional prefix) of an S3-compatible server."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        create_bucket: bool = True,
    ) -> None:
        """Connect lazily: nothing goes over the network until the first call.

        Args:
            bucket: bucket name.
            prefix: folder inside the bucket that holds this store's keys.
            endpoint: `http(s)://host:port` of MinIO / S3; None for AWS.
            access_key: access key; None to read AWS/MinIO env vars or the instance role.
            secret_key: secret key.
            region: region; given so presigning needs no round trip.
            create_bucket: create the bucket on the first write that finds it missing.
        """
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise ConfigError(f"invalid S3 bucket name {bucket!r}") from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.create_bucket = create_bucket
        parsed = urlsplit(endpoint or "https://s3.amazonaws.com")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"S3 endpoint must be http(s)://host[:port], got {endpoint!r}")
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}"
        credentials: Provider | None = None
        if access_key is None:
            credentials = ChainedProvider([EnvAWSProvider(), EnvMinioProvider(), IamAwsProvider()])
        options: dict[str, Any] = {
            "endpoint": parsed.netloc,
            "access_key": access_key,
            "secret_key": secret_key,
            "secure": parsed.scheme == "https",
            "region": region,
            "credentials": credentials,
        }
        self._client = Minio(**options, http_client=_http_client(retry_writes=True))
        self._conditional_client = Minio(**options, http_client=_http_client(retry_writes=False))

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.url!r}, endpoint={self.endpoint!r})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextlib.contextmanager
    def _errors(self, key: str | None = None, *, conditional: bool = False) -> Iterator[None]:
        """Translate minio/urllib3 failures into Cairn's error tree."""
        try:
            yield
        except S3Error as exc:
            status = exc.response.status if exc.response is not None else 0
            if exc.code in _PRECONDITION_CODES or status == 412:
                raise PreconditionFailed(
                    f"conditional write of {key!r} lost: {exc.code}", key=key
                ) from exc
            if exc.code in _NOT_FOUND_CODES or status == 404:
                if conditional:  # If-Match on a missing object: the expected version is gone
                    raise PreconditionFailed(f"object {key!r} does not exist", key=key) from exc
                raise ObjectNotFound(f"no object {key!r} in {self.url}", key=key) from exc
            if status >= 500:
                raise Unavailable(f"S3 at {self.endpoint} failed: {exc.code}") from exc
            raise CairnError(f"S3 request for {key!r} failed: {exc.code} {exc.message}") from exc
        except (ServerError, InvalidResponseError) as exc:
            raise Unavailable(f"S3 at {self.endpoint} failed: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(f"S3 at {self.endpoint} unreachable: {exc}") from exc
        except MinioException as exc:
            raise CairnError(f"S3 request for {key!r} failed: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (idempotent; racing creators are fine)."""
        with self._errors():
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    def _write(self, key: str, conditional: bool, upload: Any) -> Any:
        """Run `upload`, creating the bucket and trying once more if it was missing."""
        for attempt in (1, 2):
            try:
                with self._errors(key, conditional=conditional):
                    return upload()
            except (ObjectNotFound, PreconditionFailed) as exc:
                cause = exc.__cause__
                missing_bucket = isinstance(cause, S3Error) and cause.code == "NoSuchBucket"
                if not (missing_bucket and self.create_bucket and attempt == 1):
                    raise
                self.ensure_bucket()
        raise AssertionError("unreachable")

    # Writing ---------------------------------------------------------------------------------

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        name = self._name(key)
        if if_none_match or if_match is not None:
            headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": content_type}
            if if_none_match:
                headers["If-None-Match"] = "*"
            if if_match is not None:
                headers["If-Match"] = f'"{_etag(if_match)}"'
            # minio's public put_object turns unknown headers into user metadata, so the
            # conditional PUT goes through its low-level single-request call.
            result = self._write(
                key,
                if_match is not None,
                lambda: self._conditional_client._put_object(self.bucket, name, data, headers),
            )
        else:
            result = self._write(
                key,
                False,
                lambda: self._client.put_object(
                    self.bucket, name, io.BytesIO(data), len(data), content_type=content_type
                ),
            )
        return ObjectInfo(key, len(data), _etag(result.etag), None, content_type)

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        name = self._name(key)
        size = path.stat().st_size
        result = self._write(
            key,
            False,
            lambda: self._client.fput_object(self.bucket, name, str(path), content_type),
        )
        return ObjectInfo(key, size, _etag(result.etag), None, content_type)

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            with self._errors(key):
                self._client.remove_object(self.bucket, name)
        except ObjectNotFound:
            return  # a missing bucket holds no such key either

    # Reading ---------------------------------------------------------------------------------

    def _info(self, key: str, headers: Any) -> ObjectInfo:
        modified = headers.get("last-modified")
        return ObjectInfo(
            key=key,
            size=int(headers.get("content-length", 0)),
            etag=_etag(headers.get("etag")),
            last_modified=parsedate_to_datetime(modified) if modified else None,
            content_type=headers.get("content-type"),
        )

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        name = self._name(key)
        with self._errors(key):
            response = self._client.get_object(self.bucket, name)
            try:
                return response.data, self._info(key, response.headers)
            finally:
                response.close()
                response.release_conn()

    def get_bytes(self, key: str) -> bytes:
        return self.get_with_info(key)[0]

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        name = self._name(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.part")
        try:
            with self._errors(key):
                response = self._client.get_object(self.bucket, name)
                try:
                    info = self._info(key, response.headers)
                    with tmp.open("xb") as out:
                        for chunk in response.stream(1 << 20):
                            out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                finally:
                    response.close()
                    response.release_conn()
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return info

    def get_range(self, key: str, start: int, end: int) -> bytes:
        check_range(start, end)
        name = self._name(key)
        if end == start:  # no byte to ask for: an empty range still needs the object to exist
            self.stat(key)
            return b""
        try:
            with self._errors(key):
                response = self._client.get_object(
                    self.bucket, name, offset=start, length=end - start
                )
                try:
                    return response.data
                finally:
                    response.close()
                    response.release_conn()
        except CairnError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code == "InvalidRange":
                return b""  # 416: the range starts at or past the end of the object
            raise

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        name = self._name(key)
        with self._errors(key):
            response = self._client.get_object(self.bucket, name)

        def chunks() -> Iterator[bytes]:
            try:
                with self._errors(key):
                    yield from response.stream(chunk_size)
            finally:
                response.close()
                response.release_conn()

        return chunks()

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        with self._errors(key):
            found = self._client.stat_object(self.bucket, name)
        return ObjectInfo(
            key=key,
            size=found.size or 0,
            etag=_etag(found.etag),
            last_modified=found.last_modified,
            content_type=found.content_type,
        )

    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        try:
            with self._errors(prefix):
                found = self._client.list_objects(
                    self.bucket, prefix=self.prefix + prefix, recursive=recursive
                )
                for item in found:
                    if item.is_dir or item.object_name is None:
                        continue
                    yield ObjectInfo(
                        key=item.object_name[len(self.prefix) :],
                        size=item.size or 0,
                        etag=_etag(item.etag),
                        last_modified=item.last_modified,
                        content_type=item.content_type,
                    )
        except ObjectNotFound:
            return  # no bucket yet: nothing stored

    def presigned_get_url(self, key: str, expires_s: int = 3600) -> str:
        name = self._name(key)
        with self._errors(key):
            return self._client.presigned_get_object(
                self.bucket, name, expires=timedelta(seconds=expires_s)
            )

    def presigned_put_url(self, key: str, expires_s: int = 3600) -> str:
        """A URL to PUT the object's bytes to (send `Content-Type: application/octet-stream`)."""
        name = self._name(key)
        with self._errors(key):
            return self._client.presigned_put_object(
                self.bucket, name, expires=timedelta(seconds=expires_s)
            )
