"""The feature store's service layer: performs commands from HTTP and events, publishes outcomes.

Blocking work (object store, Parquet, DuckDB, bulk loads) runs in threads through operations.py, so
the event loop stays free for online reads while data is loaded. GetRecord reads the online store
inline: one indexed SQLite row or one Redis round trip is cheaper than a hop to a thread.

Invalid records: PutRecord answers 400 naming the feature and the problem. A FeatureRecordsPut
event is split: its valid records are stored, its invalid ones are dead-lettered (only those
records, reason in the `cairn-dlq-error` header) and counted, with their reasons, in
FeatureIngestionCompleted. A bulk load counts and reports bad rows the same way. An event that is
not a valid FeatureRecordsPut at all (or names no group) is dead-lettered whole by the bus.

Training sets: a request that cannot be built (a 4xx: unknown group or column, no such dataset,
a name taken by another request) is answered with TrainingSetFailed, from HTTP and the bus alike;
over the bus that answer settles the request. Other failures are retried, then dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cairn.bus import envelope_for
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    FeatureGroupCreationRequested,
    FeatureIngestionCompleted,
    FeatureIngestionFailed,
    FeatureIngestionRequested,
    FeatureRecordsPut,
    TrainingSetBuilt,
    TrainingSetFailed,
    TrainingSetRequested,
)
from cairn.errors import CairnError, InvalidInput
from cairn.namespaces import DATASET_SCHEME, confine_channel
from cairn.ports import DeadLetter, Publish
from cairn.store.base import ObjectStore

from services.featurestore import operations
from services.featurestore.config import FeatureStoreSettings
from services.featurestore.domain import FeatureGroup, record_from_sagemaker
from services.featurestore.offline import OfflineStore
from services.featurestore.online import open_online_store
from services.featurestore.operations import (
    BatchGetItem,
    FeatureStore,
    IngestResult,
    TrainingSetDoc,
)

log = logging.getLogger("cairn.featurestore")

SOURCE = "featurestore"
REASON_INVALID_RECORDS = "invalid-records"
REASON_REFUSED = "request-refused"
MAX_DLQ_ERROR_CHARS = 2000


def dataset_reference(location: str, *, field: str) -> str:
    """A registered dataset (`dataset://name@version`): the only source the feature store reads.

    Raises:
        InvalidInput: naming `field`, for anything else (store keys included).
    """
    reference = confine_channel(location, field=field)
    if not reference.startswith(DATASET_SCHEME):
        raise InvalidInput(
            f"{field}: {location!r} is not a registered dataset (dataset://name@version)",
            field=field,
        )
    return reference


def failure_event(request: TrainingSetRequested, error: CairnError) -> TrainingSetFailed:
    """TrainingSetFailed for a request that cannot be built."""
    return TrainingSetFailed(
        training_set_name=request.training_set_name, reason=error.message, code=error.code
    )


class FeatureStoreHandlers:
    """Every feature store command; the stores are opened with the service (`open`/`close`)."""

    def __init__(
        self,
        store: ObjectStore,
        home: Path,
        config: FeatureStoreSettings,
        publish: Publish,
        dead_letter: DeadLetter,
    ) -> None:
        self.store = store
        self.home = home
        self.config = config
        self.publish = publish
        self.dead_letter = dead_letter
        self._fs: FeatureStore | None = None

    # Lifetime ----------------------------------------------------------------------------------

    async def open(self) -> FeatureStore:
        """Open the online and offline stores (the service's resource)."""
        online_url = self.config.resolved_online_url(self.home)
        online = await asyncio.to_thread(open_online_store, online_url)
        offline = OfflineStore(
            self.store,
            self.config.offline_prefix,
            cache_dir=self.config.resolved_cache_dir(self.home),
        )
        self._fs = FeatureStore(self.store, online, offline)
        return self._fs

    async def close(self, fs: FeatureStore | None = None) -> None:
        """Close the online store (`Service.resource` passes what `open` returned; unused)."""
        if self._fs is not None:
            self._fs.online.close()
            self._fs = None

    def current(self) -> FeatureStore | None:
        """The feature store while the service runs, else None."""
        return self._fs

    @property
    def fs(self) -> FeatureStore:
        if self._fs is None:
            raise RuntimeError("the feature store is used before the service started")
        return self._fs

    # Groups ------------------------------------------------------------------------------------

    async def create_group(
        self, request: FeatureGroupCreationRequested, cause: Envelope[Any] | None = None
    ) -> tuple[FeatureGroup, bool]:
        group, created = await asyncio.to_thread(operations.create_group, self.fs, request)
        # Published on a repeat too: the first attempt may have died before publishing.
        await self.publish(group.created_event(), cause=cause)
        return group, created

    async def list_groups(self) -> list[FeatureGroup]:
        return await asyncio.to_thread(operations.list_groups, self.fs)

    async def group(self, group_name: str) -> FeatureGroup:
        return await asyncio.to_thread(self.fs.group, group_name)

    # Records -----------------------------------------------------------------------------------

    async def put_record(self, group_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PutRecord: `{"Record": [{"FeatureName", "ValueAsString"}]}` or `{"record": {...}}`."""
        record = record_from_sagemaker(body)
        result = await asyncio.to_thread(operations.put_record, self.fs, group_name, record)
        return {
            "feature_group_name": group_name,
            "stored_online": result.records_stored_online == 1,
        }

    async def get_record(
        self, group_name: str, record_id: str, features: Sequence[str] | None
    ) -> dict[str, Any]:
        """GetRecord: the latest live record (404 when missing, deleted or expired)."""
        fs = self.fs
        if not fs.has_cached_group(group_name):
            await asyncio.to_thread(fs.group, group_name)
        return operations.get_record(fs, group_name, record_id, features)

    async def delete_record(
        self, group_name: str, record_id: str, event_time: datetime
    ) -> dict[str, Any]:
        deleted = await asyncio.to_thread(
            operations.delete_record, self.fs, group_name, record_id, event_time
        )
        return {
            "feature_group_name": group_name,
            "record_identifier": record_id,
            "deleted": deleted,
        }

    async def batch_get(self, items: Sequence[BatchGetItem]) -> dict[str, Any]:
        total = sum(len(item.record_identifiers) for item in items)
        if total > self.config.max_batch_get:
            raise InvalidInput(f"at most {self.config.max_batch_get} identifiers per request")
        return await asyncio.to_thread(operations.batch_get, self.fs, items)

    async def state_as_of(
        self, group_name: str, moment: datetime, as_of_known_time: bool, limit: int | None
    ) -> dict[str, Any]:
        """Time travel: every record's latest live values with event time <= `moment`."""
        rows = min(limit or self.config.max_as_of_rows, self.config.max_as_of_rows)
        return await asyncio.to_thread(
            operations.state_as_of, self.fs, group_name, moment, as_of_known_time, rows
        )

    # Ingestion ---------------------------------------------------------------------------------

    async def request_ingestion(self, group_name: str, dataset_uri: str) -> Envelope[Any]:
        """Bulk load: queued as FeatureIngestionRequested; FeatureIngestionCompleted reports it."""
        dataset_uri = dataset_reference(dataset_uri, field="dataset_uri")
        await self.group(group_name)
        request = FeatureIngestionRequested(feature_group_name=group_name, dataset_uri=dataset_uri)
        return await self.publish(request)

    async def on_records_put(self, envelope: Envelope[FeatureRecordsPut]) -> None:
        data = envelope.data
        source = f"event:{envelope.event_id}"
        try:
            result = await asyncio.to_thread(
                operations.ingest_records,
                self.fs,
                data.feature_group_name,
                data.records,
                f"event-{envelope.event_id}",
            )
        except CairnError as error:
            await self._refuse(envelope, data.feature_group_name, source, error)
            return
        if result.rejections:
            await self._dead_letter_rejected(envelope, result)
        await self._report(data.feature_group_name, source, result, envelope)

    async def on_ingestion_requested(self, envelope: Envelope[FeatureIngestionRequested]) -> None:
        """Bulk load a dataset version; a request that can never succeed is refused, not retried."""
        data = envelope.data
        try:
            dataset_reference(data.dataset_uri, field="dataset_uri")
            result = await asyncio.to_thread(
                operations.ingest_dataset,
                self.fs,
                data.feature_group_name,
                data.dataset_uri,
                f"bulk-{envelope.event_id}",
                self.config.bulk_batch_rows,
            )
        except CairnError as error:
            await self._refuse(envelope, data.feature_group_name, data.dataset_uri, error)
            return
        await self._report(data.feature_group_name, data.dataset_uri, result, envelope)

    async def _refuse(
        self, envelope: Envelope[Any], group_name: str, source: str, error: CairnError
    ) -> None:
        """A 4xx refusal: FeatureIngestionFailed and the request dead-lettered with the reason.

        Anything else (the store or Redis unavailable) is raised for the bus to retry.
        """
        if not error.is_refusal:
            raise error
        log.warning("refusing %s %s: %s", envelope.type, envelope.event_id, error.message)
        failed = FeatureIngestionFailed(
            feature_group_name=group_name,
            source=source,
            reason=error.message,
            failure_code=error.code,
        )
        await self.publish(failed, cause=envelope)
        await self.dead_letter(envelope, REASON_REFUSED, error=error.message)

    async def on_creation_requested(
        self, envelope: Envelope[FeatureGroupCreationRequested]
    ) -> None:
        await self.create_group(envelope.data, cause=envelope)

    # Training sets -----------------------------------------------------------------------------

    async def build_training_set(
        self, request: TrainingSetRequested, cause: Envelope[Any] | None = None
    ) -> TrainingSetDoc:
        """Build a point-in-time correct training set; repeating the request reuses it.

        Raises:
            CairnError: why it cannot be built; a 4xx is first announced as TrainingSetFailed.
        """
        try:
            dataset_reference(request.entity_dataset_uri, field="entity_dataset_uri")
            doc = await asyncio.to_thread(operations.build_training_set, self.fs, request)
        except CairnError as exc:
            if exc.http_status < 500:
                await self._training_set_failed(request, exc, cause)
            raise
        built = TrainingSetBuilt(
            training_set_name=request.training_set_name,
            dataset_uri=doc.dataset_uri,
            row_count=doc.row_count,
        )
        await self.publish(built, cause=cause)
        return doc

    async def describe_training_set(self, name: str) -> TrainingSetDoc:
        return await asyncio.to_thread(operations.describe_training_set, self.fs, name)

    async def on_training_set_requested(self, envelope: Envelope[TrainingSetRequested]) -> None:
        """A request that cannot be built is answered (TrainingSetFailed) and settled."""
        try:
            await self.build_training_set(envelope.data, cause=envelope)
        except CairnError as exc:
            if exc.http_status >= 500:
                raise  # retried, then dead-lettered by the bus with the reason

    # Outcomes ----------------------------------------------------------------------------------

    async def _training_set_failed(
        self, request: TrainingSetRequested, error: CairnError, cause: Envelope[Any] | None
    ) -> None:
        await self.publish(failure_event(request, error), cause=cause)

    async def _report(
        self, group_name: str, source: str, result: IngestResult, cause: Envelope[Any] | None
    ) -> None:
        completed = FeatureIngestionCompleted(
            feature_group_name=group_name,
            records_written=result.records_written,
            records_rejected=result.records_rejected,
            source=source,
            rejections=result.reasons(),
        )
        await self.publish(completed, cause=cause)

    async def _dead_letter_rejected(
        self, envelope: Envelope[FeatureRecordsPut], result: IngestResult
    ) -> None:
        """Dead-letter only the invalid records, with their reasons; the valid ones are stored."""
        data = envelope.data
        rejected = FeatureRecordsPut(
            feature_group_name=data.feature_group_name,
            records=[data.records[r.index] for r in result.rejections],
        )
        # A new event caused by the original, so a fixed replay is not deduplicated away.
        partial = envelope_for(rejected, source=SOURCE, cause=envelope)
        error = "; ".join(result.reasons())[:MAX_DLQ_ERROR_CHARS]
        await self.dead_letter(partial, REASON_INVALID_RECORDS, error=error)
