"""The edge service layer: fleets, devices and deployment plans (packaging jobs are in `jobs`).

State lives in the store under `edge/` with conditional writes. A plan's events go to its own
outbox first (written with the state change) and are published by the rollout sweep, which also
pushes each plan's device targets into the devices' desired state, so a restart in between loses
and doubles nothing that matters (events are at least once, targets idempotent). A plan with the
drift gate has its running stage measured by the sweep once its bake is over (`DriftGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from cairn.auth.keys import issue_key, revoke_key
from cairn.auth.principal import Principal
from cairn.auth.sealing import SecretBox
from cairn.contracts.catalogue import validate_data
from cairn.contracts.edge_events import EdgeDeviceRegistered, EdgeFleetCreated
from cairn.contracts.envelope import utc_now
from cairn.documents import DocumentStore
from cairn.errors import CairnError, Conflict, NotFound, PreconditionFailed
from cairn.ports import Platform
from cairn.store.base import ObjectStore
from cairn_edge.package import new_signing_key

from services.edge.config import EdgeSettings
from services.edge.domain import (
    FLEETS,
    PLANS,
    TERMINAL_PLAN,
    Desired,
    Device,
    DriftCheck,
    Fleet,
    Plan,
    device_key,
    fleet_key,
    plan_key,
    validate_plan,
)
from services.edge.drift_gate import DriftGate
from services.edge.jobs import PackagingJobs
from services.edge.rollout import advance, drift_due, roll_back

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
        self.plans: DocumentStore[Plan] = DocumentStore(store, Plan, PLANS)
        self.jobs = PackagingJobs(store, settings, platform)
        self.drift = DriftGate(store, settings)
        self.changed = asyncio.Condition()

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

    # Plans -----------------------------------------------------------------------------------

    async def create_plan(self, plan: Plan) -> Plan:
        devices = await self.list_devices(plan.fleet_name)
        validate_plan(plan, [d.device_name for d in devices])
        package = await self.jobs.package(plan.package_name)
        if package.status != "Completed":
            raise Conflict(f"package {plan.package_name} is {package.status}, not Completed")
        if plan.gate("drift") is not None:  # 422 now when there is no training data to compare
            await asyncio.to_thread(
                self.drift.baseline, package.model_package_group, package.model_version
            )
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
                    stage.drift = None
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
            checks = await self._drift_checks(plan, now)
            plan = (
                await asyncio.to_thread(
                    self.plans.update, plan_key(name), lambda p: _advanced(p, devices, now, checks)
                )
            ).doc
        for device_name, target in plan.targets.items():
            current = devices.get(device_name)
            if current is not None and not _same_target(current.desired, target):
                await self.set_desired(plan.fleet_name, device_name, target)
        await self._publish_outbox(plan)

    async def _drift_checks(self, plan: Plan, now: Any) -> dict[str, DriftCheck]:
        """A fresh drift measurement of the running stage, when its bake is over."""
        stage = drift_due(plan, now, self.settings.drift_check_interval_s)
        if stage is None:
            return {}
        package = await self.jobs.package(plan.package_name)
        try:
            check = await asyncio.to_thread(self.drift.measure, plan, stage, package, now)
        except (CairnError, OSError, ValueError) as error:  # the store, a capture: try again
            log.warning("drift check of %s/%s failed: %r", plan.plan_name, stage.name, error)
            problem = error.message if isinstance(error, CairnError) else repr(error)
            gate = plan.gate("drift")
            level = gate.threshold if gate is not None else 0.05
            check = DriftCheck(checked_at=now, samples=0, threshold=level, problem=problem)
        return {stage.name: check}

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
        plans = await self.list_plans()
        for plan in plans:
            if plan.status not in TERMINAL_PLAN or plan.outbox:
                await self.step(plan.plan_name)
        self.drift.keep_only({p.plan_name for p in plans if p.status == "InProgress"})
        await self.jobs.sweep()

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


def _advanced(
    plan: Plan | None, devices: dict[str, Device], now: Any, checks: dict[str, DriftCheck]
) -> Plan:
    if plan is None:
        raise NotFound("the plan vanished")
    return advance(plan, devices, now, checks) if plan.status == "InProgress" else plan
