"""Lineage from the deployer's announcements: which endpoints serve which versions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import EndpointUpdated
from cairn.documents import DocumentStore
from cairn.store.base import ObjectStore

from services.registry import domain
from services.registry.domain import EndpointLinks, ModelVersion
from services.registry.repository import existing_version, version_key

VersionChange = Callable[[ModelVersion], ModelVersion]


class EndpointLinker:
    """Links versions to the endpoints that serve them, newest endpoint revision winning."""

    def __init__(self, store: ObjectStore, clock: Callable[[], datetime] = utc_now) -> None:
        self.clock = clock
        self.versions = DocumentStore(store, ModelVersion, "registry/groups")
        self.endpoint_links = DocumentStore(store, EndpointLinks, "registry/endpoints")

    def apply(self, update: EndpointUpdated) -> None:
        """Link the versions an endpoint serves now; unlink those it stopped serving."""
        key = f"{update.endpoint_name}.json"
        seen = self.endpoint_links.get_or_none(key)
        if seen is not None and seen.doc.revision >= update.revision:
            return
        serving = domain.served_by(update)
        name, revision, now = update.endpoint_name, update.revision, self.clock()
        for group_name, number in set(seen.doc.models if seen else []) - set(serving):
            self._update_if_exists(
                group_name, number, lambda v: domain.unlink_endpoint(v, name, revision)
            )
        for (group_name, number), variants in serving.items():
            self._update_if_exists(group_name, number, _linker(name, variants, revision, now))
        links = EndpointLinks(endpoint_name=name, revision=revision, models=sorted(serving))
        self.endpoint_links.update(
            key, lambda current: current if current and current.revision >= revision else links
        )

    async def on_endpoint_updated(self, envelope: Envelope[EndpointUpdated]) -> None:
        await asyncio.to_thread(self.apply, envelope.data)

    def _update_if_exists(self, group_name: str, number: int, fn: VersionChange) -> None:
        key = version_key(group_name, number)
        if self.versions.get_or_none(key) is None:
            return  # a model this registry never registered: nothing to link
        self.versions.update(key, lambda current: fn(existing_version(current, group_name, number)))


def _linker(endpoint_name: str, variants: list[str], revision: int, now: datetime) -> VersionChange:
    return lambda version: domain.link_endpoint(version, endpoint_name, variants, revision, now)
