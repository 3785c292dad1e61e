"""Deployer use cases: endpoints, weights, auto-deploy and rollouts; store first, then events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from cairn.contracts.envelope import Envelope, RawEnvelope, utc_now
from cairn.contracts.events import (
    DeploymentRequested,
    DeploymentRolledBack,
    EndpointMetricsReported,
    ModelApprovalChanged,
    ModelPackageRegistered,
)
from cairn.documents import DocumentStore
from cairn.errors import NotFound, Unavailable
from cairn.store.base import ObjectStore
from pydantic import BaseModel

from services.deployer import domain
from services.deployer.config import DeployerSettings
from services.deployer.domain import (
    AutoDeployPolicy,
    EndpointDoc,
    ModelRecord,
    ModelVersionUnknown,
    WeightChange,
)

log = logging.getLogger("cairn.deployer")

EndpointChange = Callable[[EndpointDoc | None], EndpointDoc]


class Publish(Protocol):
    """Publishes one event (the service's `publish`), chaining ids from `cause`."""

    def __call__(
        self, data: BaseModel, cause: Envelope[Any] | None = None
    ) -> Awaitable[Envelope[Any]]: ...


class AutoDeployPolicyNotFound(NotFound):
    code = "auto_deploy_policy_not_found"


class Deployer:
    """Endpoint documents, the model projection and auto-deploy policies in the object store."""

    def __init__(
        self,
        store: ObjectStore,
        publish: Publish,
        config: DeployerSettings | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.publish = publish
        self.config = config or DeployerSettings()
        self.clock = clock
        self.endpoints = DocumentStore(store, EndpointDoc, "deployer/endpoints")
        self.models = DocumentStore(store, ModelRecord, "deployer/models")
        self.policies = DocumentStore(store, AutoDeployPolicy, "deployer/auto-deploy")

    # Reads -------------------------------------------------------------------------------

    def list_endpoints(self) -> list[EndpointDoc]:
        return [found.doc for found in self.endpoints.list() if domain.is_live(found.doc)]

    def get_endpoint(self, endpoint_name: str) -> EndpointDoc:
        found = self.endpoints.get_or_none(f"{endpoint_name}.json")
        return domain.require_live(found.doc if found else None, endpoint_name)

    # Changes -----------------------------------------------------------------------------

    def _change(self, endpoint_name: str, fn: EndpointChange) -> tuple[EndpointDoc, bool]:
        """Apply `fn` with a conditional write; True when it made a new revision to announce."""
        made_revision: list[bool] = []

        def apply(current: EndpointDoc | None) -> EndpointDoc:
            new = fn(current)
            made_revision.append(current is None or new.revision != current.revision)
            return new

        written = self.endpoints.update(f"{endpoint_name}.json", apply)
        return written.doc, made_revision[-1]

    async def _announce(self, doc: EndpointDoc, cause: Envelope[Any] | None) -> None:
        """Publish the stored desired state, then note that this revision went out."""
        await self.publish(doc.announcement(), cause)

        def mark(current: EndpointDoc | None) -> EndpointDoc:
            assert current is not None  # endpoint documents are never removed
            published = max(current.published_revision, doc.revision)
            return current.model_copy(update={"published_revision": published})

        await asyncio.to_thread(self.endpoints.update, f"{doc.endpoint_name}.json", mark)

    def _models_for(self, request: DeploymentRequested) -> dict[tuple[str, int], ModelRecord]:
        specs = [*request.production_variants, *filter(None, [request.shadow_variant])]
        index: dict[tuple[str, int], ModelRecord] = {}
        for spec in specs:
            found = self.models.get_or_none(
                _model_key(spec.model_package_group, spec.model_version)
            )
            if found is not None:
                index[(spec.model_package_group, spec.model_version)] = found.doc
        return index

    async def deploy(
        self, request: DeploymentRequested, cause: Envelope[Any] | None = None
    ) -> EndpointDoc:
        """Create, update or delete an endpoint (HTTP or DeploymentRequested)."""
        models = await asyncio.to_thread(self._models_for, request)

        def apply(current: EndpointDoc | None) -> EndpointDoc:
            new = domain.apply_request(current, request, models, self.clock())
            started = current is None or new.revision != current.revision
            if cause is None or new.rollout is None or not started:
                return new
            # The rollout's later steps are announced by the driver: they keep this workflow.
            traced = new.rollout.model_copy(
                update={"correlation_id": cause.correlation_id, "causation_id": str(cause.event_id)}
            )
            return new.model_copy(update={"rollout": traced})

        doc, changed = await asyncio.to_thread(self._change, request.endpoint_name, apply)
        if changed:
            await self._announce(doc, cause)
        return doc

    async def set_weights(self, endpoint_name: str, changes: list[WeightChange]) -> EndpointDoc:
        """UpdateEndpointWeightsAndCapacities: a new revision with the same models."""
        doc, changed = await asyncio.to_thread(
            self._change,
            endpoint_name,
            lambda current: domain.update_weights(current, endpoint_name, changes, self.clock()),
        )
        if changed:
            await self._announce(doc, None)
        return doc

    # Model projection and auto-deploy ----------------------------------------------------

    async def on_model_registered(self, envelope: Envelope[ModelPackageRegistered]) -> None:
        event = envelope.data
        await asyncio.to_thread(
            self.models.update,
            _model_key(event.model_package_group, event.version),
            lambda current: domain.apply_registered(current, event, self.clock()),
        )

    async def on_approval_changed(self, envelope: Envelope[ModelApprovalChanged]) -> None:
        """Track the decision; deploy the version when its group has an auto-deploy policy."""
        event = envelope.data
        await asyncio.to_thread(
            self.models.update,
            _model_key(event.model_package_group, event.version),
            lambda current: domain.apply_approval_changed(current, event, self.clock()),
        )
        if event.approval_status != "Approved":
            return
        policy = await asyncio.to_thread(self.get_policy_or_none, event.model_package_group)
        if policy is None:
            return
        current = await asyncio.to_thread(
            self.endpoints.get_or_none, f"{policy.endpoint_name}.json"
        )
        request = domain.auto_deploy_request(
            policy, event.version, current.doc if current else None
        )
        if request is None:
            return
        try:
            await self.deploy(request, cause=envelope)
        except ModelVersionUnknown as exc:
            # The registration event travels on another topic and may not be applied yet:
            # a retryable error lets the bus try again after a backoff.
            raise Unavailable(f"auto-deploy waits for the registration: {exc.message}") from exc

    def get_policy_or_none(self, group: str) -> AutoDeployPolicy | None:
        found = self.policies.get_or_none(f"{group}.json")
        return found.doc if found else None

    def get_policy(self, group: str) -> AutoDeployPolicy:
        policy = self.get_policy_or_none(group)
        if policy is None:
            raise AutoDeployPolicyNotFound(
                f"model package group {group!r} has no auto-deploy policy",
                model_package_group=group,
            )
        return policy

    def put_policy(self, group: str, policy: AutoDeployPolicy) -> AutoDeployPolicy:
        stored = policy.model_copy(update={"model_package_group": group})
        return self.policies.update(f"{group}.json", lambda _current: stored).doc

    def delete_policy(self, group: str) -> None:
        self.get_policy(group)
        self.policies.delete(f"{group}.json")

    # Rollouts ----------------------------------------------------------------------------

    async def on_metrics(self, envelope: Envelope[EndpointMetricsReported]) -> None:
        """Feed a traffic report to the rollout's alarms; roll back when one trips."""
        report = envelope.data
        found = await asyncio.to_thread(self.endpoints.get_or_none, f"{report.endpoint_name}.json")
        if found is None or found.doc.rollout is None:
            return
        tripped: list[tuple[str, str] | None] = []

        def observe(current: EndpointDoc | None) -> EndpointDoc:
            if current is None:
                tripped.append(None)
                return domain.require_live(current, report.endpoint_name)
            observed, reason, variant = domain.observe_metrics(
                current, report, envelope.occurred_at, self.config.alarm_min_requests
            )
            if reason is None or variant is None:
                tripped.append(None)
                return observed
            tripped.append((variant, reason))
            return domain.roll_back(observed, variant, reason, self.clock())

        doc, changed = await asyncio.to_thread(self._change, report.endpoint_name, observe)
        if not changed or tripped[-1] is None or doc.last_rollback is None:
            return
        log.warning("rolled back endpoint %s: %s", doc.endpoint_name, doc.last_rollback.reason)
        cause = _rollout_cause(found.doc.rollout) or envelope
        await self._announce(doc, cause)
        await self.publish(
            DeploymentRolledBack(
                endpoint_name=doc.endpoint_name,
                rolled_back_variant=doc.last_rollback.rolled_back_variant,
                restored_revision=doc.last_rollback.restored_revision,
                reason=doc.last_rollback.reason,
            ),
            cause,
        )

    async def tick(self) -> None:
        """One pass of the rollout driver: advance baked steps, re-announce lost revisions."""
        for found in await asyncio.to_thread(self.endpoints.list):
            doc = found.doc
            if doc.rollout is not None:
                cause = _rollout_cause(doc.rollout)
                name = doc.endpoint_name
                doc, changed = await asyncio.to_thread(
                    self._change,
                    name,
                    lambda current, name=name: domain.advance_rollout(
                        domain.require_live(current, name), self.clock()
                    ),
                )
                if changed:
                    await self._announce(doc, cause)
                    continue
            stale_s = (self.clock() - doc.updated_at).total_seconds()
            if doc.published_revision < doc.revision and stale_s >= self.config.republish_after_s:
                # The process that wrote this revision died before announcing it.
                await self._announce(doc, None)

    async def run_rollouts(self) -> None:
        """Drive rollouts forever (the API lifespan starts and cancels it); survives errors."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("rollout pass failed; trying again")
            await asyncio.sleep(self.config.rollout_tick_s)


def _rollout_cause(rollout: domain.RolloutState) -> Envelope[Any] | None:
    """The request that started a rollout, as the cause of the events its steps publish."""
    if rollout.correlation_id is None or rollout.causation_id is None:
        return None
    return RawEnvelope(
        event_id=UUID(rollout.causation_id),
        type="DeploymentRequested",
        source="deployer",
        correlation_id=rollout.correlation_id,
        data={},
    )


def _model_key(group: str, version: int) -> str:
    return f"{group}/{version}.json"
