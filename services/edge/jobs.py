"""Packaging jobs (Neo's job as a service): stored at once, built in the background, published once.

`POST /packages` checks what can be checked at once (the model is registered, the format suits it,
a compiler exists for the target) and stores the job `InProgress`; the build runs in a task and
writes the outcome into the job's document, then publishes `EdgePackagingJobCompleted|Failed` and
marks it published. The sweep restarts a build that a restart interrupted and publishes an outcome
whose event was not sent, so each job ends with its event at least once.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from cairn.contracts.edge_events import EdgePackagingJobCompleted, EdgePackagingJobFailed
from cairn.contracts.envelope import utc_now
from cairn.contracts.state import ModelVersionView, read_state
from cairn.documents import DocumentStore
from cairn.errors import CairnError, Conflict, NotFound, PreconditionFailed
from cairn.ports import Platform
from cairn.store.base import ObjectStore
from cairn_edge.package import EdgeManifest

from services.edge import packaging
from services.edge.config import EdgeSettings
from services.edge.domain import PACKAGES, PackageDoc, package_file_key


class PackagingJobs:
    def __init__(self, store: ObjectStore, settings: EdgeSettings, platform: Platform) -> None:
        self.store = store
        self.settings = settings
        self.platform = platform
        self.packages: DocumentStore[PackageDoc] = DocumentStore(store, PackageDoc, PACKAGES)
        self._building: set[str] = set()

    async def create_package(
        self, group: str, version: int, target: str, fmt: str | None, tolerance: float | None
    ) -> PackageDoc:
        """Check what can be checked at once (4xx), store the job, build in the background."""
        view = await asyncio.to_thread(
            read_state, self.store, ModelVersionView, group, str(version)
        )
        if view is None:
            raise NotFound(f"model {group}:{version} is not registered")
        manifest = await asyncio.to_thread(_framework_of, self.store, view.artifact_uri)
        fmt = fmt or packaging.default_format(manifest)
        packaging.check_request(manifest, fmt, target)
        base = f"{group.lower()}-v{version}-{fmt}-{target.removeprefix('linux-')}"
        for build in range(1, 1000):
            doc = PackageDoc(
                package_name=f"{base}-{build}".replace("_", "-"),
                model_package_group=group,
                model_version=version,
                build=build,
                target=target,
                format=fmt,
                tolerance=self.settings.default_tolerance if tolerance is None else tolerance,
            )
            try:
                await asyncio.to_thread(self.packages.create, f"{doc.package_name}.json", doc)
            except PreconditionFailed:
                continue
            self._start_build(doc.package_name)
            return doc
        raise Conflict(f"too many builds of {base}")

    def _start_build(self, name: str) -> None:
        if name in self._building:
            return
        self._building.add(name)
        task = asyncio.get_running_loop().create_task(self._build(name))
        task.add_done_callback(lambda _: self._building.discard(name))

    async def _build(self, name: str) -> None:
        doc = await self.package(name)
        view = read_state(
            self.store, ModelVersionView, doc.model_package_group, str(doc.model_version)
        )
        update: dict[str, Any]
        try:
            if view is None:
                raise NotFound("the model version was deregistered")
            update = await asyncio.to_thread(self._build_files, doc, view.artifact_uri)
        except (CairnError, OSError, RuntimeError, ValueError) as error:
            reason = error.message if isinstance(error, CairnError) else repr(error)
            update = {"status": "Failed", "reason": reason}
        await asyncio.to_thread(
            self.packages.update, f"{name}.json", lambda d: _changed(d, update, name)
        )
        await self.publish_package_outcome(name)

    def _build_files(self, doc: PackageDoc, artifact_uri: str) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(dir=self.settings.workdir) as tmp:
            built = packaging.build(
                self.store, artifact_uri, doc.format, doc.target, doc.tolerance, Path(tmp) / "pkg"
            )
            for file in built.folder.iterdir():
                self.store.put_file(package_file_key(doc.package_name, file.name), file)
        manifest = EdgeManifest(
            package_name=doc.package_name,
            model_package_group=doc.model_package_group,
            model_version=doc.model_version,
            build=doc.build,
            format=doc.format,
            target=doc.target,
            model_file=built.model_file,
            framework=built.framework,
            tolerance=doc.tolerance,
            files=built.files,
            created_at=utc_now(),
        )
        return {
            "status": "Completed",
            "manifest": manifest.model_dump_json(),
            "size_bytes": built.size_bytes,
            "max_abs_error": built.max_abs_error,
            "latency_us": built.latency_us,
            "original_latency_us": built.original_latency_us,
        }

    async def publish_package_outcome(self, name: str) -> None:
        doc = await self.package(name)
        if doc.outcome_published or doc.status == "InProgress":
            return
        event: Any
        if doc.status == "Completed":
            event = EdgePackagingJobCompleted(
                package_name=name,
                model_package_group=doc.model_package_group,
                model_version=doc.model_version,
                target=doc.target,
                format=doc.format,
                size_bytes=doc.size_bytes,
                max_abs_error=doc.max_abs_error or 0.0,
                latency_us=doc.latency_us or 0.0,
                original_latency_us=doc.original_latency_us or 0.0,
            )
        else:
            event = EdgePackagingJobFailed(
                package_name=name,
                model_package_group=doc.model_package_group,
                model_version=doc.model_version,
                reason=doc.reason or "failed",
            )
        await self.platform.publish(event)
        await asyncio.to_thread(
            self.packages.update,
            f"{name}.json",
            lambda d: _changed(d, {"outcome_published": True}, name),
        )

    async def package(self, name: str) -> PackageDoc:
        found = await asyncio.to_thread(self.packages.get_or_none, f"{name}.json")
        if found is None:
            raise NotFound(f"no edge package {name!r}")
        return found.doc

    async def list_packages(self) -> list[PackageDoc]:
        keys = await asyncio.to_thread(self.packages.keys)
        names = [key.removesuffix(".json") for key in keys if "/" not in key]
        return [await self.package(name) for name in names]

    async def sweep(self) -> None:
        """Restart interrupted builds; publish outcomes whose event was not sent."""
        for package in await self.list_packages():
            if package.status == "InProgress":
                self._start_build(package.package_name)
            elif not package.outcome_published:
                await self.publish_package_outcome(package.package_name)


def _changed(doc: PackageDoc | None, update: dict[str, Any], name: str) -> PackageDoc:
    if doc is None:
        raise NotFound(f"no edge package {name!r}")
    return doc.model_copy(update=update)


def _framework_of(store: ObjectStore, artifact_uri: str) -> str:
    from cairn.artifacts import read_manifest

    try:
        return read_manifest(store, artifact_uri).framework
    except CairnError as error:
        raise NotFound(f"the model's package cannot be read: {error.message}") from None
