"""What devices call: their signed desired state (long-polled), heartbeats, downloads, captures.

A device credential is a key with scope `device` named `device:<fleet>:<device>`; it acts for that
one device only. Anything else (another fleet, another device, a package it was never sent) is
refused with the reason and written to the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from typing import Any

from cairn.auth.principal import Principal
from cairn.auth.scopes import ADMIN
from cairn.contracts.edge_events import EdgeCaptureRecord
from cairn.contracts.envelope import utc_now
from cairn.contracts.state import state_spec
from cairn.errors import Conflict, Forbidden, InvalidInput, NotFound
from cairn_edge.package import Directive, SignedDirective, sign, sign_directive
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.edge.domain import Device, device_key, package_file_key
from services.edge.handlers import DEVICE_PRINCIPAL, EdgeHandlers

_LABELS = ("fleet", "device")
P50 = Gauge("cairn_edge_device_latency_p50_ms", "Device-reported median latency.", _LABELS)
P99 = Gauge("cairn_edge_device_latency_p99_ms", "Device-reported p99 latency.", _LABELS)
ERRORS = Gauge("cairn_edge_device_errors", "Failed requests on the running package.", _LABELS)
REQUESTS = Gauge("cairn_edge_device_requests", "Requests on the running package.", _LABELS)
LAST_SEEN = Gauge(
    "cairn_edge_device_last_heartbeat_seconds", "Unix time of the last beat.", _LABELS
)
HEALTHY = Gauge("cairn_edge_device_healthy", "1 when the device serves a model.", _LABELS)


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    agent_version: str = Field(max_length=40)
    revision: int = -1
    package_name: str | None = None
    health: str = Field(default="Unknown", max_length=40)
    refusal: dict[str, Any] | None = None
    p50_ms: float | None = Field(default=None, ge=0)
    p99_ms: float | None = Field(default=None, ge=0)
    request_count: int = Field(default=0, ge=0)
    error_count: int = Field(default=0, ge=0)
    captured_pending: int = Field(default=0, ge=0)


class DeviceApi:
    def __init__(self, handlers: EdgeHandlers) -> None:
        self.edge = handlers

    async def authorise(self, principal: Principal, fleet: str, device: str, what: str) -> None:
        """Only the device's own credential (or an admin) acts for it; a refusal is audited."""
        if ADMIN in principal.scopes or principal.kind == "anonymous":
            return
        if principal.name == DEVICE_PRINCIPAL.format(fleet=fleet, device=device):
            return
        reason = f"credential {principal.key_id} ({principal.name}) is not device {fleet}/{device}"
        await self._audit_refusal(principal, what, f"/fleets/{fleet}/devices/{device}", reason)
        raise Forbidden(reason)

    async def _audit_refusal(
        self, principal: Principal, action: str, resource: str, reason: str
    ) -> None:
        await self.edge.platform.audit(
            action=action,
            resource=resource,
            principal=principal,
            outcome="denied",
            details={"reason": reason},
        )

    async def desired(
        self, fleet: str, device: str, known: int, wait_s: float
    ) -> dict[str, Any] | None:
        """The signed directive once its revision differs from `known`; None after `wait_s`."""
        deadline = time.monotonic() + min(wait_s, self.edge.settings.max_long_poll_s)
        while True:
            current = await self.edge.device(fleet, device)
            if current.desired.revision != known:
                return await self._directive(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            async with self.edge.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.edge.changed.wait(), min(remaining, 1.0))

    async def _directive(self, device: Device) -> dict[str, Any]:
        fleet = await self.edge.fleet(device.fleet_name)
        seed = self.edge.box.open(fleet.sealed_signing_key)
        desired = device.desired
        manifest_text: str | None = None
        files: dict[str, str] = {}
        if desired.package_name is not None:
            package = await self.edge.jobs.package(desired.package_name)
            manifest_text = package.manifest
            names = json.loads(manifest_text or "{}").get("files", {})
            files = {name: self._url(package.package_name, name) for name in names}
        directive = Directive(
            fleet_name=device.fleet_name,
            device_name=device.device_name,
            revision=desired.revision,
            package_name=desired.package_name,
            manifest=manifest_text,
            manifest_signature=sign(seed, manifest_text.encode()) if manifest_text else None,
            rollback=desired.rollback,
            plan_name=desired.plan_name,
        )
        signed: SignedDirective = sign_directive(seed, directive)
        return {"signed": signed.model_dump(), "files": files}

    def _url(self, package: str, name: str) -> str:
        if self.edge.settings.presign_downloads:
            try:
                url = self.edge.store.presigned_get_url(package_file_key(package, name), 3600)
            except NotImplementedError:
                url = ""
            if url.startswith(("http://", "https://")):
                return url
        return f"/packages/{package}/files/{name}"

    async def heartbeat(
        self, principal: Principal, fleet: str, device: str, beat: Heartbeat
    ) -> Device:
        current = await self.edge.device(fleet, device)
        if beat.package_name is not None and beat.package_name not in current.sent:
            reason = f"device {fleet}/{device} reports package {beat.package_name}, never sent it"
            await self._audit_refusal(
                principal, "edge_device.heartbeat", f"/fleets/{fleet}/devices/{device}", reason
            )
            raise Conflict(reason)

        def beaten(doc: Device | None) -> Device:
            if doc is None:
                raise NotFound(f"no device {device!r} in fleet {fleet!r}")
            fields = beat.model_dump(exclude={"captured_pending"})
            return doc.model_copy(update={**fields, "last_heartbeat": utc_now()})

        updated = await asyncio.to_thread(
            self.edge.devices.update, device_key(fleet, device), beaten
        )
        labels = (fleet, device)
        P50.labels(*labels).set(beat.p50_ms or 0.0)
        P99.labels(*labels).set(beat.p99_ms or 0.0)
        ERRORS.labels(*labels).set(beat.error_count)
        REQUESTS.labels(*labels).set(beat.request_count)
        LAST_SEEN.labels(*labels).set(time.time())
        HEALTHY.labels(*labels).set(1.0 if beat.health == "Healthy" else 0.0)
        return updated.doc

    async def check_download(self, principal: Principal, package: str) -> None:
        """A device downloads only packages it was sent."""
        if ADMIN in principal.scopes or principal.kind == "anonymous":
            return
        _, fleet, device = [*principal.name.split(":"), "", ""][:3]
        try:
            current = await self.edge.device(fleet, device)
        except NotFound:
            current = None
        if current is None or package not in current.sent:
            reason = f"{principal.name} was never sent package {package}"
            await self._audit_refusal(
                principal, "edge_package.download", f"/packages/{package}", reason
            )
            raise Forbidden(reason)

    async def store_captures(self, fleet: str, device: str, batch: str, body: bytes) -> str:
        """Store one uploaded batch (its name makes a retried upload land on the same key)."""
        lines = [line for line in body.splitlines() if line.strip()]
        if not lines:
            raise InvalidInput("the batch holds no records")
        first_time: datetime | None = None
        for index, line in enumerate(lines):
            try:
                record = EdgeCaptureRecord.model_validate_json(line)
            except ValidationError as error:
                raise InvalidInput(f"line {index + 1} is not a capture record: {error}") from None
            if first_time is None:
                stamp = record.eventMetadata.get("inferenceTime")
                first_time = _parse_time(stamp) if isinstance(stamp, str) else None
        key = state_spec(EdgeCaptureRecord).key(fleet, device, first_time or utc_now(), batch)  # type: ignore[arg-type]
        await asyncio.to_thread(
            self.edge.store.put_bytes,
            key,
            b"\n".join(lines) + b"\n",
            content_type="application/jsonlines",
        )
        return key


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
