"""The edge service layer: fleets, devices, packaging jobs and deployment plans.

State lives in the store under `edge/` with conditional writes. A plan's events go to its own
outbox first (written with the state change) and are published by the rollout sweep, which also
pushes each plan's device targets into the devices' desired state, so a restart in between loses
and doubles nothing that matters (events are at least once, targets idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.auth.keys import issue_key, revoke_key
from cairn.auth.principal import Principal
from cairn.auth.sealing import SecretBox
from cairn.contracts.catalogue import validate_data
from cairn.contracts.edge_events import (
    EdgeDeviceRegistered,
    EdgeFleetCreated,
    EdgePackagingJobCompleted,
    EdgePackagingJobFailed,
)
from cairn.contracts.envelope import utc_now
from cairn.contracts.state import ModelVersionView, read_state
from cairn.documents import DocumentStore
from cairn.errors import CairnError, Conflict, NotFound, PreconditionFailed
from cairn.ports import Platform
from cairn.store.base import ObjectStore
from cairn_edge.package import EdgeManifest, new_signing_key

from services.edge import packaging
from services.edge.config import EdgeSettings
from services.edge.domain import (
    FLEETS,
    PACKAGES,
    PLANS,
    TERMINAL_PLAN,
    Desired,
    Device,
    Fleet,
    PackageDoc,
    Plan,
    advance,
    device_key,
    fleet_key,
    package_file_key,
    plan_key,
    roll_back,
    validate_plan,
)

log = logging.getLogger("cairn.edge")
DEVICE_PRINCIPAL = "device:{fleet}:{device}"


@dataclass(frozen=True)
class Registered:
    device: Device
    token: str
    public_key: str


class EdgeHandlers:
    def __init__(
        self, store: ObjectStore, box: SecretBox, settings: EdgeSettings, platform: Platform
    ) -> None:
        self.store = store
        self.box = box
        self.settings = settings
        self.platform = platform
        self.fleets: DocumentStore[Fleet] = DocumentStore(store, Fleet, FLEETS)
        self.devices: DocumentStore[Device] = DocumentStore(store, Device, FLEETS)
        self.packages: DocumentStore[PackageDoc] = DocumentStore(store, PackageDoc, PACKAGES)
        self.plans: DocumentStore[Plan] = DocumentStore(store, Plan, PLANS)
        self.changed = asyncio.Condition()
        self._building: set[str] = set()

    # Fleets and devices ----------------------------------------------------------------------

    async def create_fleet(self, name: str, description: str, principal: Principal) -> Fleet:
        seed, public = new_signing_key()
        fleet = Fleet(
            fleet_name=name,
            description=description,
            public_key=public,
            sealed_signing_key=self.box.seal(seed),
            created_by=principal.name,
        )
        try:
            await asyncio.to_thread(self.fleets.create, fleet_key(name), fleet)
        except PreconditionFailed:
            raise Conflict(f"fleet {name!r} already exists") from None
        await self.platform.publish(
            EdgeFleetCreated(fleet_name=name, public_key=public, created_by=principal.name)
        )
        return fleet

    async def fleet(self, name: str) -> Fleet:
        found = await asyncio.to_thread(self.fleets.get_or_none, fleet_key(name))
        if found is None:
            raise NotFound(f"no fleet {name!r}")
        return found.doc

    async def list_fleets(self) -> list[Fleet]:
        keys = await asyncio.to_thread(self.fleets.keys)
        names = sorted({key.split("/", 1)[0] for key in keys if key.endswith("/fleet.json")})
        return [await self.fleet(name) for name in names]

    async def register_device(self, fleet_name: str, device_name: str) -> Registered:
        fleet = await self.fleet(fleet_name)
        principal = DEVICE_PRINCIPAL.format(fleet=fleet_name, device=device_name)
        issued = await asyncio.to_thread(
            issue_key,
            self.store,
            self.box,
            name=principal,
            scopes=["device"],
            created_by="service:edge",
            description=f"edge device {device_name} of fleet {fleet_name}",
        )
        device = Device(fleet_name=fleet_name, device_name=device_name, key_id=issued.key.key_id)
        try:
            await asyncio.to_thread(
                self.devices.create, device_key(fleet_name, device_name), device
            )
        except PreconditionFailed:
            await asyncio.to_thread(revoke_key, self.store, issued.key.key_id)
            raise Conflict(
                f"device {device_name!r} is already registered in {fleet_name}"
            ) from None
        await self.platform.publish(
            EdgeDeviceRegistered(
                fleet_name=fleet_name, device_name=device_name, key_id=issued.key.key_id
            )
        )
        return Registered(device, issued.token, fleet.public_key)

    async def device(self, fleet_name: str, device_name: str) -> Device:
        found = await asyncio.to_thread(
            self.devices.get_or_none, device_key(fleet_name, device_name)
        )
        if found is None:
            raise NotFound(f"no device {device_name!r} in fleet {fleet_name!r}")
        return found.doc

    async def list_devices(self, fleet_name: str) -> list[Device]:
        await self.fleet(fleet_name)
        return [v.doc for v in await asyncio.to_thread(self.devices.list, f"{fleet_name}/devices/")]

    async def deregister_device(self, fleet_name: str, device_name: str) -> Device:
        device = await self.device(fleet_name, device_name)
        await asyncio.to_thread(revoke_key, self.store, device.key_id)
        await asyncio.to_thread(self.devices.delete, device_key(fleet_name, device_name))
        return device

    # Packaging -------------------------------------------------------------------------------

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

    # Plans -----------------------------------------------------------------------------------

    async def create_plan(self, plan: Plan) -> Plan:
        devices = await self.list_devices(plan.fleet_name)
        validate_plan(plan, [d.device_name for d in devices])
        package = await self.package(plan.package_name)
        if package.status != "Completed":
            raise Conflict(f"package {plan.package_name} is {package.status}, not Completed")
        for other in await self.list_plans():
            if other.fleet_name == plan.fleet_name and other.status not in TERMINAL_PLAN:
                raise Conflict(
                    f"plan {other.plan_name} is {other.status} on fleet {plan.fleet_name}: "
                    "roll it back or let it end first"
                )
        try:
            await asyncio.to_thread(self.plans.create, plan_key(plan.plan_name), plan)
        except PreconditionFailed:
            raise Conflict(f"plan {plan.plan_name!r} already exists") from None
        await self.step(plan.plan_name)
        return await self.plan(plan.plan_name)

    async def plan(self, name: str) -> Plan:
        found = await asyncio.to_thread(self.plans.get_or_none, plan_key(name))
        if found is None:
            raise NotFound(f"no deployment plan {name!r}")
        return found.doc

    async def list_plans(self) -> list[Plan]:
        return [v.doc for v in await asyncio.to_thread(self.plans.list)]

    async def pause(self, name: str) -> Plan:
        return await self._transition(name, {"InProgress"}, "Paused")

    async def resume(self, name: str) -> Plan:
        def resumed(plan: Plan) -> Plan:
            for stage in plan.stages:
                if stage.status == "Failed":  # a paused failure gets a fresh deadline and bake
                    stage.status, stage.started_at, stage.met_at = "InProgress", utc_now(), None
            return plan

        await self._transition(name, {"Paused"}, "InProgress", resumed)
        await self.step(name)
        return await self.plan(name)

    async def rollback(self, name: str, reason: str) -> Plan:
        def rolled(plan: Plan) -> Plan:
            started = [s for s in plan.stages if s.status not in ("Pending", "RolledBack")]
            roll_back(plan, started, utc_now(), reason)
            return plan

        await self._transition(name, {"InProgress", "Paused", "Completed"}, None, rolled)
        await self.step(name)
        return await self.plan(name)

    async def _transition(
        self, name: str, allowed: set[str], status: str | None, change: Any = None
    ) -> Plan:
        def apply(plan: Plan | None) -> Plan:
            if plan is None:
                raise NotFound(f"no deployment plan {name!r}")
            if plan.status not in allowed:
                raise Conflict(f"plan {name} is {plan.status}")
            plan = plan.model_copy(deep=True)
            if status is not None:
                plan.status = status  # type: ignore[assignment]
            return change(plan) if change is not None else plan

        return (await asyncio.to_thread(self.plans.update, plan_key(name), apply)).doc

    # The rollout sweep -----------------------------------------------------------------------

    async def step(self, name: str) -> None:
        """Advance one plan, push its targets to the devices, publish its outbox."""
        plan = await self.plan(name)
        devices = {d.device_name: d for d in await self.list_devices(plan.fleet_name)}
        if plan.status == "InProgress":
            now = utc_now()
            plan = (
                await asyncio.to_thread(
                    self.plans.update, plan_key(name), lambda p: _advanced(p, devices, now)
                )
            ).doc
        for device_name, target in plan.targets.items():
            current = devices.get(device_name)
            if current is not None and not _same_target(current.desired, target):
                await self.set_desired(plan.fleet_name, device_name, target)
        await self._publish_outbox(plan)

    async def set_desired(self, fleet: str, device: str, target: Desired) -> None:
        def change(current: Device | None) -> Device:
            if current is None:
                raise NotFound(f"device {device} vanished")
            if _same_target(current.desired, target):
                return current
            desired = target.model_copy(update={"revision": current.desired.revision + 1})
            sent = (
                current.sent
                if target.package_name in current.sent or not target.package_name
                else [*current.sent, target.package_name]
            )
            return current.model_copy(update={"desired": desired, "sent": sent})

        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self.devices.update, device_key(fleet, device), change)
        async with self.changed:
            self.changed.notify_all()

    async def _publish_outbox(self, plan: Plan) -> None:
        if not plan.outbox:
            return
        for item in plan.outbox:
            await self.platform.publish(validate_data(item["type"], item["data"]))
        sent = len(plan.outbox)

        def drained(current: Plan | None) -> Plan:
            assert current is not None
            return current.model_copy(update={"outbox": current.outbox[sent:]})

        await asyncio.to_thread(self.plans.update, plan_key(plan.plan_name), drained)

    async def sweep(self) -> None:
        for plan in await self.list_plans():
            if plan.status not in TERMINAL_PLAN or plan.outbox:
                await self.step(plan.plan_name)
        for package in await self.list_packages():
            if package.status == "InProgress":
                self._start_build(package.package_name)
            elif not package.outcome_published:
                await self.publish_package_outcome(package.package_name)

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as error:  # the next sweep tries again
                log.warning("edge sweep failed: %r", error)
            await asyncio.sleep(self.settings.sweep_interval_s)


def _same_target(desired: Desired, target: Desired) -> bool:
    return (desired.package_name, desired.rollback, desired.plan_name) == (
        target.package_name,
        target.rollback,
        target.plan_name,
    )


def _advanced(plan: Plan | None, devices: dict[str, Device], now: Any) -> Plan:
    if plan is None:
        raise NotFound("the plan vanished")
    return advance(plan, devices, now) if plan.status == "InProgress" else plan


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
