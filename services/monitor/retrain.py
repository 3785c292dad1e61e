"""Retrain on drift: policies per model package group, fresh training data, challenger judging.

DriftDetected -> (dedupe, cooldown, enough labels?) -> RetrainRequested + TrainingJobRequested
(the original job's algorithm and hyperparameters on original + labelled captured data) ->
ModelPackageRegistered of that job -> challenger vs champion on the same holdout ->
ChallengerEvaluated, and ModelApprovalRequested when better by the margin -> the registry's
ModelApprovalChanged(Approved) -> DeploymentRequested(update) with the policy's canary rollout.
Only events: the monitor calls no other service, and each event carries the drift's correlation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    ChallengerEvaluated,
    DeploymentRequested,
    DriftDetected,
    ModelApprovalChanged,
    ModelApprovalRequested,
    ModelPackageRegistered,
    RetrainRequested,
    VariantSpec,
)
from cairn.documents import DocumentStore

from services.monitor.domain import (
    JOB_PROGRESS,
    POLICIES,
    RETRAIN_DATA,
    PolicyNotFound,
    RetrainAction,
    RetrainJob,
    RetrainPolicy,
    RetrainPolicyBody,
    decide_promotion,
    decide_retrain,
    record_decision,
    retrain_job_name,
)
from services.monitor.handlers import SELF, Monitor
from services.monitor.retrain_data import (
    RetrainContext,
    evaluate,
    gather,
    write_training_data,
)
from services.monitor.runs import utc_now
from services.monitor.storage import readable
from services.monitor.views import model_version, served_model

log = logging.getLogger("cairn.monitor.retrain")

APPROVER = "cairn-monitor"


class Retrainer:
    """The retrain-on-drift rule: one policy document per model package group."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.store = monitor.store
        self.config = monitor.config
        self.policies: DocumentStore[RetrainPolicy] = DocumentStore(
            self.store, RetrainPolicy, POLICIES
        )

    # Policies ----------------------------------------------------------------------------------

    async def put_policy(self, group: str, body: RetrainPolicyBody) -> RetrainPolicy:
        """Store the policy, keeping its memory (handled runs, cooldown, jobs)."""
        now = utc_now()

        def change(current: RetrainPolicy | None) -> RetrainPolicy:
            if current is None:
                return RetrainPolicy(
                    model_package_group=group, created_at=now, updated_at=now, **body.model_dump()
                )
            return current.model_copy(update={**body.__dict__, "updated_at": now})

        return (await asyncio.to_thread(self.policies.update, f"{group}.json", change)).doc

    def get_policy(self, group: str) -> RetrainPolicy:
        found = self.policies.get_or_none(f"{group}.json")
        if found is None:
            raise PolicyNotFound(f"no retrain policy for model package group {group!r}")
        return found.doc

    def find_policy(self, group: str) -> RetrainPolicy | None:
        found = self.policies.get_or_none(f"{group}.json")
        return found.doc if found is not None else None

    def list_policies(self) -> list[RetrainPolicy]:
        return readable(self.policies)

    def delete_policy(self, group: str) -> None:
        self.policies.delete(f"{group}.json")

    # Drift -> retrain --------------------------------------------------------------------------

    async def on_drift(self, envelope: Envelope[DriftDetected]) -> None:
        """Apply the group's policy to a drift: start (or resume) one retrain job, or skip it."""
        drift = envelope.data
        policy = await asyncio.to_thread(self.find_policy, drift.model_package_group)
        if policy is None or policy.endpoint_name != drift.endpoint_name:
            return
        # Cheap first look: a duplicate or a drift within the cooldown reads no data.
        action, reason = decide_retrain(policy, drift.run_id, 1 << 62, utc_now())
        if action in ("duplicate", "cooldown"):
            log.info("drift %s on %s: %s", drift.run_id, drift.model_package_group, reason)
            await asyncio.to_thread(self._record, drift, None, 0)
            return
        context = await asyncio.to_thread(gather, self.monitor, drift)
        job = self._new_job(envelope, context)
        decided, reason = await asyncio.to_thread(self._record, drift, job, len(context.captured))
        if decided not in ("retrain", "resume"):
            log.info("drift %s: %s", drift.run_id, reason)
            return
        await self._request_training(envelope, context, job.job_name)

    def _new_job(self, envelope: Envelope[DriftDetected], context: RetrainContext) -> RetrainJob:
        drift = envelope.data
        job_name = retrain_job_name(drift.model_package_group, drift.run_id)
        return RetrainJob(
            job_name=job_name,
            drift_run_id=drift.run_id,
            base_training_job=context.base_job,
            base_version=drift.model_version,
            holdout_key=f"{RETRAIN_DATA}/{job_name}/holdout.parquet",
            correlation_id=envelope.correlation_id,
            requested_at=utc_now(),
        )

    async def _request_training(
        self, envelope: Envelope[DriftDetected], context: RetrainContext, job_name: str
    ) -> None:
        """Write the job's data, then RetrainRequested and TrainingJobRequested."""
        drift = envelope.data
        policy = await asyncio.to_thread(self.get_policy, drift.model_package_group)
        job = policy.jobs[job_name]  # the recorded job (a resumed one keeps its first request)
        request = await asyncio.to_thread(
            write_training_data,
            self.store,
            drift,
            policy,
            job,
            context,
            self.config.holdout_fraction,
        )
        drifted = ", ".join([f.feature for f in drift.features] + drift.violations)
        retrain = RetrainRequested(
            model_package_group=drift.model_package_group,
            endpoint_name=drift.endpoint_name,
            reason=f"drift in run {drift.run_id}: {drifted}"[:500],
            drift_run_id=drift.run_id,
            base_training_job=job.base_training_job,
            new_training_job=job.job_name,
        )
        await self.monitor.publish(retrain, cause=envelope)
        await self.monitor.publish(request, cause=envelope)
        group = drift.model_package_group
        await asyncio.to_thread(self._set_status, group, job.job_name, "requested")
        await self.monitor.audit(
            "retrain_policy.retrain",
            f"/retrain-policies/{group}",
            SELF,
            envelope.correlation_id,
            drift_run_id=drift.run_id,
            training_job=job.job_name,
        )

    def _record(
        self, drift: DriftDetected, job: RetrainJob | None, labelled: int
    ) -> tuple[RetrainAction, str]:
        """Decide again inside a conditional write, so two deliveries cannot both retrain."""
        outcome: dict[str, tuple[RetrainAction, str]] = {}

        def change(current: RetrainPolicy | None) -> RetrainPolicy:
            if current is None:
                raise PolicyNotFound(f"retrain policy {drift.model_package_group} was deleted")
            now = utc_now()
            action, reason = outcome["decision"] = decide_retrain(
                current, drift.run_id, labelled, now
            )
            return record_decision(current, action, reason, drift.run_id, job, labelled, now)

        self.policies.update(f"{drift.model_package_group}.json", change)
        return outcome["decision"]

    def _set_status(self, group: str, job_name: str, status: str, **extra: Any) -> None:
        def change(current: RetrainPolicy | None) -> RetrainPolicy:
            if current is None or job_name not in current.jobs:
                raise PolicyNotFound(f"retrain job {job_name} of {group} is gone")
            updated = current.model_copy(deep=True)
            job = updated.jobs[job_name]
            # Never back: an approval handled first keeps `deploy_requested` over `evaluated`.
            kept = max(status, job.status, key=JOB_PROGRESS.index)
            updated.jobs[job_name] = job.model_copy(update={**extra, "status": kept})
            return updated

        self.policies.update(f"{group}.json", change)

    # Challenger --------------------------------------------------------------------------------

    async def on_registered(self, envelope: Envelope[ModelPackageRegistered]) -> None:
        """Judge a retrained version against the champion; approve it when better by the margin."""
        data = envelope.data
        policy = await asyncio.to_thread(self.find_policy, data.model_package_group)
        job = policy.jobs.get(data.training_job or "") if policy is not None else None
        if policy is None or job is None or job.evaluation is not None:
            return
        verdict = await self._judge(policy, job, data)
        await self.monitor.publish(verdict, cause=envelope)
        if verdict.promoted:
            approve = ModelApprovalRequested(
                model_package_group=data.model_package_group,
                version=data.version,
                approval_status="Approved",
                requested_by=APPROVER,
                reason=verdict.reason[:500],
            )
            await self.monitor.publish(approve, cause=envelope)
        # Marked after publishing, so a crash in between judges again on the redelivery.
        await asyncio.to_thread(
            self._set_status,
            data.model_package_group,
            job.job_name,
            "evaluated",
            promoted=verdict.promoted,
            challenger_version=data.version,
            evaluation=verdict,
        )

    async def _judge(
        self, policy: RetrainPolicy, job: RetrainJob, data: ModelPackageRegistered
    ) -> ChallengerEvaluated:
        found = await asyncio.to_thread(evaluate, self.monitor, policy, job, data)
        promoted, reason = decide_promotion(
            policy.metric, found.challenger, found.champion, policy.margin
        )
        return ChallengerEvaluated(
            model_package_group=data.model_package_group,
            challenger_version=data.version,
            champion_version=found.champion_version,
            metric=policy.metric,
            challenger_score=found.challenger,
            champion_score=found.champion,
            margin=policy.margin,
            promoted=promoted,
            reason=reason,
        )

    async def on_approval_changed(self, envelope: Envelope[ModelApprovalChanged]) -> None:
        """Roll out an approved challenger this policy judged, with the policy's canary rollout.

        Whoever approved it (this monitor, or a person reviewing a pending challenger), it is
        deployed; a redelivery publishes the same request again, which the deployer ignores as a
        config it already serves.
        """
        data = envelope.data
        if data.approval_status != "Approved":
            return
        found = await asyncio.to_thread(
            self._retrain_job_of, data.model_package_group, data.version
        )
        if found is None:
            return
        policy, job = found
        variant_name = job.deployed_variant or await asyncio.to_thread(
            self._variant_name, policy.endpoint_name
        )
        if job.status != "deploy_requested":
            await asyncio.to_thread(
                self._set_status,
                policy.model_package_group,
                job.job_name,
                "deploy_requested",
                deploy_requested_at=utc_now(),
                deployed_variant=variant_name,
            )
        variant = VariantSpec(
            variant_name=variant_name,
            model_package_group=policy.model_package_group,
            model_version=data.version,
        )
        request = DeploymentRequested(
            endpoint_name=policy.endpoint_name,
            action="update",
            production_variants=[variant],
            rollout=policy.rollout,
        )
        await self.monitor.publish(request, cause=envelope)

    def _retrain_job_of(self, group: str, version: int) -> tuple[RetrainPolicy, RetrainJob] | None:
        """The policy's requested retrain job that produced this version, if any.

        The version's training job names it: the approval may overtake the handler that judged
        it, before the job records its challenger version.
        """
        policy = self.find_policy(group)
        registered = model_version(self.store, group, version)
        training_job = registered.lineage.training_job if registered is not None else None
        job = policy.jobs.get(training_job) if policy and training_job else None
        if policy is None or job is None or job.status == "claimed":
            return None
        return policy, job

    def _variant_name(self, endpoint: str) -> str:
        """The name the endpoint serves its model under now (the canary replaces that variant)."""
        served = served_model(self.store, endpoint)
        return served.variant_name if served is not None else "AllTraffic"
