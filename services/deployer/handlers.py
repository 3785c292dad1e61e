"""Deployer use cases: endpoints, weights, auto-deploy and rollouts; store first, then events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, get_args
from uuid import UUID

from cairn.audit import Outcome
from cairn.contracts.envelope import Envelope, RawEnvelope, utc_now
from cairn.contracts.events import (
    ApprovalStatus,
    DeploymentFailed,
    DeploymentRequested,
    DeploymentRolledBack,
    EndpointMetricsReported,
    ModelApprovalChanged,
    ModelPackageRegistered,
)
from cairn.contracts.state import ModelVersionView, read_state
from cairn.documents import DocumentStore, Versioned
from cairn.errors import CairnError, ConfigError, Unavailable
from cairn.ports import Authority, DeadLetter, Publish
from cairn.store.base import ObjectStore

from services.deployer import domain, graph, pipelines, rollout
from services.deployer.config import DeployerSettings
from services.deployer.documents import (
    EndpointDoc,
    ModelRecord,
    RolloutState,
    WeightChange,
    invalid_fields,
    last_revision,
    readable,
)
from services.deployer.domain import (
    EndpointDocumentUnreadable,
    ModelVersionUnknown,
    NoRolloutInProgress,
)
from services.deployer.policies import AutoDeployPolicies

log = logging.getLogger("cairn.deployer")
REASON_REFUSED = "request-refused"  # the dead-letter reason of a request that cannot succeed

EndpointChange = Callable[[EndpointDoc | None], EndpointDoc]


class Deployer:
    """Endpoint documents, the model projection and auto-deploy policies in the object store."""

    def __init__(
        self,
        store: ObjectStore,
        publish: Publish,
        config: DeployerSettings | None = None,
        clock: Callable[[], datetime] = utc_now,
        authority: Authority | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        self.store = store
        self.publish = publish
        self.config = config or DeployerSettings()
        self.clock = clock
        self.authority = authority
        self.dead_letter = dead_letter
        self.endpoints = DocumentStore(store, EndpointDoc, "deployer/endpoints")
        self.models = DocumentStore(store, ModelRecord, "deployer/models")
        self.policies = AutoDeployPolicies(store)

    # Reads -------------------------------------------------------------------------------

    def list_endpoints(self) -> list[EndpointDoc]:
        return [found.doc for found in readable(self.endpoints) if domain.is_live(found.doc)]

    def get_endpoint(self, endpoint_name: str) -> EndpointDoc:
        found = self._read(endpoint_name)
        return domain.require_live(found.doc if found else None, endpoint_name)

    def check_deletable(self, endpoint_name: str) -> None:
        """404 unless the endpoint is live or unreadable (deleting replaces an unreadable one)."""
        with contextlib.suppress(EndpointDocumentUnreadable):
            self.get_endpoint(endpoint_name)

    def _read(self, endpoint_name: str) -> Versioned[EndpointDoc] | None:
        """The stored endpoint; EndpointDocumentUnreadable (409) when it no longer validates."""
        try:
            return self.endpoints.get_or_none(f"{endpoint_name}.json")
        except CairnError as exc:
            raise _unreadable(endpoint_name, exc) from exc

    def _replace_unreadable(self, endpoint_name: str) -> EndpointDoc:
        """Overwrite an unreadable endpoint with a tombstone one revision past the one it held,
        so the gateway's revision order still holds when the endpoint is created again."""
        key = f"{endpoint_name}.json"
        raw, info = self.store.get_with_info(self.endpoints.prefix + key)
        doc = domain.tombstone(endpoint_name, last_revision(raw), self.clock())
        return self.endpoints.replace(key, doc, info.etag).doc

    # Changes -----------------------------------------------------------------------------

    def _change(self, endpoint_name: str, fn: EndpointChange) -> tuple[EndpointDoc, bool]:
        """Apply `fn` with a conditional write; True when it made a new revision to announce."""
        made_revision: list[bool] = []

        def apply(current: EndpointDoc | None) -> EndpointDoc:
            new = fn(current)
            made_revision.append(current is None or new.revision != current.revision)
            return new

        try:
            written = self.endpoints.update(f"{endpoint_name}.json", apply)
        except CairnError as exc:
            raise _unreadable(endpoint_name, exc) from exc
        return written.doc, made_revision[-1]

    async def _announce(self, doc: EndpointDoc, cause: Envelope[Any] | None) -> None:
        """Publish the stored desired state, then note that this revision went out."""
        await self.publish(doc.announcement(), cause)

        def mark(current: EndpointDoc | None) -> EndpointDoc:
            assert current is not None  # endpoint documents are never removed
            published = max(current.published_revision, doc.revision)
            return current.model_copy(update={"published_revision": published})

        await asyncio.to_thread(self.endpoints.update, f"{doc.endpoint_name}.json", mark)

    def _model_record(self, group: str, version: int) -> ModelRecord | None:
        """The registry's stored version when readable (it is written before its events are
        published, so a deploy right after an approval sees it), else the event projection."""
        view = read_state(self.store, ModelVersionView, group, str(version))
        if view is not None:
            return _record_of(view, self.clock())
        found = self.models.get_or_none(_model_key(group, version))
        return found.doc if found else None

    def _models_for(self, request: DeploymentRequested) -> dict[tuple[str, int], ModelRecord]:
        specs = [*request.production_variants, *filter(None, [request.shadow_variant])]
        index: dict[tuple[str, int], ModelRecord] = {}
        refs = [(spec.model_package_group, spec.model_version) for spec in specs]
        refs += [(c.model_package_group, c.model_version) for s in specs for c in s.containers]
        refs += graph.graph_refs(request)
        for ref in refs:
            if ref not in index and (record := self._model_record(*ref)) is not None:
                index[ref] = record
        return index

    async def deploy(
        self,
        request: DeploymentRequested,
        cause: Envelope[Any] | None = None,
        allow_unapproved: bool = False,
    ) -> EndpointDoc:
        """Create, update or delete an endpoint (HTTP or DeploymentRequested)."""
        models = await asyncio.to_thread(self._models_for, request)
        if request.action != "delete" and pipelines.pipeline_specs(request):
            manifests = await asyncio.to_thread(
                pipelines.read_pipeline_manifests, self.store, request, models
            )
            pipelines.check_pipelines(request, manifests)
        if request.action != "delete" and graph.graph_specs(request):
            graph_manifests = await asyncio.to_thread(
                graph.read_graph_manifests, self.store, request, models
            )
            graph.check_graphs(request, graph_manifests)

        def apply(current: EndpointDoc | None) -> EndpointDoc:
            new = domain.apply_request(current, request, models, self.clock(), allow_unapproved)
            started = current is None or new.revision != current.revision
            if cause is None or new.rollout is None or not started:
                return new
            # The rollout's later steps are announced by the driver: they keep this workflow.
            traced = new.rollout.model_copy(
                update={"correlation_id": cause.correlation_id, "causation_id": str(cause.event_id)}
            )
            return new.model_copy(update={"rollout": traced})

        try:
            doc, changed = await asyncio.to_thread(self._change, request.endpoint_name, apply)
        except EndpointDocumentUnreadable:
            if request.action != "delete":
                raise
            doc = await asyncio.to_thread(self._replace_unreadable, request.endpoint_name)
            changed = True
        if changed:
            await self._announce(doc, cause)
        return doc

    async def on_deployment_requested(self, envelope: Envelope[DeploymentRequested]) -> None:
        """The event form of the endpoint API; the kernel verified the signer's `deploy` scope."""
        if self.authority is None:
            raise ConfigError("the deployer needs its service to act on DeploymentRequested")
        request = envelope.data
        principal = await self.authority.principal_of(envelope)
        try:
            await self.deploy(request, cause=envelope, allow_unapproved=request.allow_unapproved)
        except CairnError as error:
            if not error.is_refusal:
                raise  # the store or a peer is unavailable: the bus retries
            await self._refuse(envelope, error)
            outcome: Outcome = "failed"
        else:
            outcome = "success"
        await self.authority.audit(
            action=f"endpoint.{request.action}",
            resource=f"endpoints/{request.endpoint_name}",
            principal=principal,
            outcome=outcome,
            correlation_id=envelope.correlation_id,
        )

    async def _refuse(self, envelope: Envelope[DeploymentRequested], error: CairnError) -> None:
        """Bad input on the bus: a DeploymentFailed naming the reason, the request dead-lettered."""
        request = envelope.data
        log.warning("refusing deployment request %s: %s", envelope.event_id, error.message)
        failed = DeploymentFailed(
            endpoint_name=request.endpoint_name,
            action=request.action,
            reason=error.message,
            failure_code=error.code,
        )
        await self.publish(failed, envelope)
        if self.dead_letter is not None:
            await self.dead_letter(envelope, REASON_REFUSED, error=error.message)

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
        if event.approval_status == "Approved":
            await self._auto_deploy(envelope)

    async def _auto_deploy(self, envelope: Envelope[ModelApprovalChanged]) -> None:
        event = envelope.data
        policy = await asyncio.to_thread(self.policies.get_or_none, event.model_package_group)
        if policy is None:
            return
        current = await asyncio.to_thread(self._read, policy.endpoint_name)
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

    # Rollouts ----------------------------------------------------------------------------

    def _observe(self, envelope: Envelope[EndpointMetricsReported]) -> tuple[EndpointDoc, bool]:
        """Tally a report into the endpoint; roll it back (a new revision) when an alarm trips."""
        report = envelope.data

        def observe(current: EndpointDoc | None) -> EndpointDoc:
            if current is None:
                return domain.require_live(current, report.endpoint_name)  # raises: not found
            observed, reason, variant = rollout.observe_metrics(
                current, report, envelope.occurred_at, self.config.alarm_min_requests
            )
            if reason is None or variant is None:
                return observed
            return rollout.roll_back(observed, variant, reason, self.clock())

        return self._change(report.endpoint_name, observe)

    async def on_metrics(self, envelope: Envelope[EndpointMetricsReported]) -> None:
        """Feed a traffic report to the rollout's alarms; roll back when one trips."""
        name = envelope.data.endpoint_name
        try:
            found = await asyncio.to_thread(self._read, name)
        except EndpointDocumentUnreadable:
            return  # reported by `_read`; no rollout can be judged on it
        if found is None or found.doc.rollout is None or not domain.is_live(found.doc):
            return
        doc, changed = await asyncio.to_thread(self._observe, envelope)
        rollback = doc.last_rollback
        if not changed or rollback is None:  # a new revision here is always the rollback
            return
        log.warning("rolled back endpoint %s: %s", doc.endpoint_name, rollback.reason)
        await self._announce_rollback(doc, _rollout_cause(found.doc.rollout) or envelope)

    async def roll_back(self, endpoint_name: str, reason: str) -> EndpointDoc:
        """Undo the rollout in progress by hand, as a tripped alarm would."""
        undone: list[RolloutState] = []

        def undo(current: EndpointDoc | None) -> EndpointDoc:
            doc = domain.require_live(current, endpoint_name)
            if doc.rollout is None:
                raise NoRolloutInProgress(
                    f"endpoint {endpoint_name!r} has no rollout in progress to roll back",
                    endpoint_name=endpoint_name,
                )
            undone.append(doc.rollout)
            variants = ", ".join(doc.rollout.watched_variants)
            return rollout.roll_back(doc, variants, reason, self.clock())

        doc, _ = await asyncio.to_thread(self._change, endpoint_name, undo)
        await self._announce_rollback(doc, _rollout_cause(undone[-1]))
        return doc

    async def _announce_rollback(self, doc: EndpointDoc, cause: Envelope[Any] | None) -> None:
        rollback = doc.last_rollback
        assert rollback is not None  # called right after a rollback was stored
        await self._announce(doc, cause)
        await self.publish(
            DeploymentRolledBack(
                endpoint_name=doc.endpoint_name,
                rolled_back_variant=rollback.rolled_back_variant,
                restored_revision=rollback.restored_revision,
                reason=rollback.reason,
            ),
            cause,
        )

    async def _advance(self, doc: EndpointDoc) -> bool:
        """Move one rollout past its bake time; True when that made a revision to announce."""
        if doc.rollout is None:
            return False
        cause = _rollout_cause(doc.rollout)
        name = doc.endpoint_name
        doc, changed = await asyncio.to_thread(
            self._change,
            name,
            lambda current: rollout.advance_rollout(
                domain.require_live(current, name), self.clock()
            ),
        )
        if changed:
            await self._announce(doc, cause)
        return changed

    async def tick(self, republish_after_s: float | None = None) -> None:
        """One pass of the rollout driver: advance baked steps, re-announce lost revisions
        (those unannounced for `republish_after_s`, by default the configured grace)."""
        grace_s = self.config.republish_after_s if republish_after_s is None else republish_after_s
        for found in await asyncio.to_thread(readable, self.endpoints):
            doc = found.doc
            if await self._advance(doc):
                continue
            stale_s = (self.clock() - doc.updated_at).total_seconds()
            if doc.published_revision < doc.revision and stale_s >= grace_s:
                # The process that wrote this revision died before announcing it.
                await self._announce(doc, None)

    async def run_rollouts(self) -> None:
        """Drive rollouts forever (the service starts and cancels it); survives errors.

        The first pass after a start re-announces every unannounced revision at once, without
        the grace: its writer is gone (this process, restarted) or repeats the same state, which
        the gateway ignores. Until then the gateway may serve an older revision.
        """
        grace_s = 0.0
        while True:
            try:
                await self.tick(grace_s)
                grace_s = self.config.republish_after_s
            except Exception:
                log.exception("rollout pass failed; trying again")
            await asyncio.sleep(self.config.rollout_tick_s)


def _unreadable(endpoint_name: str, exc: CairnError) -> CairnError:
    """EndpointDocumentUnreadable (logged) when `exc` is a failed validation, else `exc`."""
    problems = invalid_fields(exc)
    if problems is None:
        return exc
    log.error("stored endpoint %s is unreadable: %s", endpoint_name, problems)
    return EndpointDocumentUnreadable(
        f"the stored state of endpoint {endpoint_name!r} cannot be read ({problems}); "
        "delete the endpoint to replace it, then create it again",
        endpoint_name=endpoint_name,
    )


def _rollout_cause(state: RolloutState) -> Envelope[Any] | None:
    """The request that started a rollout, as the cause of the events its steps publish."""
    if state.correlation_id is None or state.causation_id is None:
        return None
    return RawEnvelope(
        event_id=UUID(state.causation_id),
        type="DeploymentRequested",
        source="deployer",
        correlation_id=state.correlation_id,
        data={},
    )


def _record_of(view: ModelVersionView, now: datetime) -> ModelRecord:
    status = view.approval_status
    known = status if status in get_args(ApprovalStatus) else "PendingManualApproval"
    return ModelRecord(
        model_package_group=view.model_package_group,
        version=view.version,
        artifact_uri=view.artifact_uri,
        approval_status=known,
        approval_decided=True,
        updated_at=now,
    )


def _model_key(group: str, version: int) -> str:
    return f"{group}/{version}.json"
