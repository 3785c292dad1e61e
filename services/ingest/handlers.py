"""The ingest service layer: performs uploads and registrations and publishes what happened.

Routes and the event subscriber both call `IngestHandlers`; the blocking conversion runs in a
thread (operations.py), so the event loop keeps answering while a large file is converted.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    ColumnSchema,
    DatasetFormat,
    DatasetIngested,
    DatasetRegistrationRequested,
    DatasetRejected,
)
from cairn.datasets import (
    DatasetIndex,
    DatasetVersion,
    get_dataset_index,
    get_dataset_version,
    list_datasets,
)
from cairn.errors import InvalidInput
from cairn.namespaces import confine
from cairn.ports import DeadLetter, Publish
from cairn.store.base import ObjectStore
from pydantic import BaseModel

from services.ingest import operations
from services.ingest.config import IngestSettings
from services.ingest.domain import SourceFormat, format_from_name
from services.ingest.operations import UPLOAD_LABEL

REASON_LOCATION_REFUSED = "location-refused"
# Presigned uploads land in the user namespace, one folder per ticket.
UPLOADS_PREFIX = "uploads"


class UploadUrlUnavailable(InvalidInput):
    """The platform's store cannot hand out presigned upload URLs (a local folder, memory)."""

    code = "upload_url_unavailable"


class UploadTicket(BaseModel):
    """Where to PUT a file too big to stream through the service, and how to register it then."""

    upload_url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str]
    source_uri: str
    format: DatasetFormat
    expires_s: int
    register_path: str


class DatasetSummary(BaseModel):
    """One line of `GET /datasets`: a dataset and its newest version."""

    name: str
    versions: int
    latest_version: int
    latest_sha256: str
    latest_row_count: int


def dataset_summary(index: DatasetIndex) -> DatasetSummary:
    latest = index.latest
    assert latest is not None  # list_datasets returns only datasets with a committed version
    return DatasetSummary(
        name=index.name,
        versions=len(index.versions),
        latest_version=latest.version,
        latest_sha256=latest.sha256,
        latest_row_count=latest.row_count,
    )


async def spool(chunks: AsyncIterator[bytes], path: Path) -> int:
    """Write a streamed body to a file chunk by chunk; never holds the whole upload."""
    received = 0
    with path.open("wb") as handle:
        async for chunk in chunks:
            # Chunks are small (~64 KiB); a local write is quicker than a thread hop.
            handle.write(chunk)
            received += len(chunk)
    return received


class IngestHandlers:
    """Uploads, registrations and dataset reads over one store; publishes every outcome."""

    def __init__(
        self,
        store: ObjectStore,
        config: IngestSettings,
        publish: Publish,
        dead_letter: DeadLetter,
    ) -> None:
        self.store = store
        self.config = config
        self.publish = publish
        self.dead_letter = dead_letter

    async def upload(
        self,
        dataset_name: str,
        body: AsyncIterator[bytes],
        source_format: SourceFormat,
        declared_schema: Sequence[ColumnSchema] | None,
    ) -> DatasetIngested:
        """A streamed file as a new dataset version (or the stored one if identical)."""
        work_dir = self.config.work_dir
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="cairn-upload-") as folder:
            path = Path(folder) / f"upload.{source_format}"
            await spool(body, path)
            return await self._ingest(
                dataset_name,
                UPLOAD_LABEL,
                lambda: operations.ingest_upload(
                    self.store,
                    dataset_name,
                    path,
                    source_format,
                    declared_schema,
                    work_dir=work_dir,
                ),
            )

    async def upload_url(self, dataset_name: str, filename: str) -> UploadTicket:
        """A presigned URL to PUT a big file into `uploads/`, then register it as the dataset.

        Raises:
            InvalidInput: the file name names no format (.csv, .parquet, .jsonl ...).
            UploadUrlUnavailable: the store cannot sign URLs; stream the file to /upload.
        """
        source_format = format_from_name(filename)
        if source_format is None:
            raise InvalidInput(
                f"filename: {filename!r} names no format; end it in .csv, .tsv, .parquet or .jsonl",
                field="filename",
            )
        key = f"{UPLOADS_PREFIX}/{dataset_name}/{uuid.uuid4().hex}/{filename}"
        expires_s = self.config.upload_url_expires_s
        try:
            url = await asyncio.to_thread(self.store.presigned_put_url, key, expires_s)
        except NotImplementedError:
            raise UploadUrlUnavailable(
                f"this platform's store ({self.store.url.split('://')[0]}://) cannot hand out "
                f"upload URLs: stream the file to POST /datasets/{dataset_name}/upload instead "
                f"(at most {self.config.max_upload_bytes} bytes)",
                max_upload_bytes=self.config.max_upload_bytes,
            ) from None
        return UploadTicket(
            upload_url=url,
            headers={"Content-Type": "application/octet-stream"},
            source_uri=key,
            format=source_format,
            expires_s=expires_s,
            register_path=f"/datasets/{dataset_name}/register",
        )

    async def register(
        self, request: DatasetRegistrationRequested, cause: Envelope[Any] | None = None
    ) -> DatasetIngested:
        """The objects under a store prefix (or one key) as a dataset version."""
        return await self._ingest(
            request.dataset_name,
            request.source_uri,
            lambda: operations.register_from_store(
                self.store, request, work_dir=self.config.work_dir
            ),
            cause=cause,
        )

    async def on_registration_requested(
        self, envelope: Envelope[DatasetRegistrationRequested]
    ) -> None:
        """A rejection is an answer, not a failure: it is published and the offset committed.

        A source outside the user namespaces is also dead-lettered: it is a request nobody may
        make, kept for whoever investigates it.
        """
        request = envelope.data
        try:
            confine(request.source_uri, field="source_uri", store=self.store)
        except InvalidInput as exc:
            await self._reject(request.dataset_name, request.source_uri, exc, envelope)
            await self.dead_letter(envelope, REASON_LOCATION_REFUSED, error=exc.message)
            return
        with contextlib.suppress(InvalidInput):
            await self.register(request, cause=envelope)

    async def list_datasets(self) -> list[DatasetSummary]:
        indexes = await asyncio.to_thread(list_datasets, self.store)
        return [dataset_summary(index) for index in indexes]

    async def dataset(self, dataset_name: str) -> DatasetIndex:
        return await asyncio.to_thread(get_dataset_index, self.store, dataset_name)

    async def dataset_version(self, dataset_name: str, version: int | None) -> DatasetVersion:
        """One version, or the newest when `version` is None."""
        return await asyncio.to_thread(get_dataset_version, self.store, dataset_name, version)

    async def _ingest(
        self,
        dataset_name: str,
        source_uri: str,
        work: Callable[[], DatasetIngested],
        cause: Envelope[Any] | None = None,
    ) -> DatasetIngested:
        """Run the blocking ingest in a thread; publish what happened, then answer."""
        try:
            ingested = await asyncio.to_thread(work)
        except InvalidInput as exc:
            await self._reject(dataset_name, source_uri, exc, cause)
            raise
        await self.publish(ingested, cause=cause)
        return ingested

    async def _reject(
        self,
        dataset_name: str,
        source_uri: str,
        error: InvalidInput,
        cause: Envelope[Any] | None,
    ) -> None:
        rejected = DatasetRejected(
            dataset_name=dataset_name, source_uri=source_uri, reason=error.message
        )
        await self.publish(rejected, cause=cause)
