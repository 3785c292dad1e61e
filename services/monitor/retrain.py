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
import hashlib
import io
import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from cairn.artifacts import load_model
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    ChallengerEvaluated,
    DeploymentRequested,
    DriftDetected,
    InputChannel,
    ModelApprovalChanged,
    ModelApprovalRequested,
    ModelPackageRegistered,
    RegistrationSpec,
    RetrainRequested,
    TrainingJobRequested,
    VariantSpec,
)
from cairn.documents import DocumentStore
from cairn.errors import InvalidInput, ObjectNotFound

from services.monitor.checks import CapturedRow, current_batch, quality_metrics
from services.monitor.domain import (
    JOB_PROGRESS,
    POLICIES,
    RETRAIN_DATA,
    PendingRun,
    PolicyNotFound,
    RetrainJob,
    RetrainPolicy,
    RetrainPolicyBody,
    decide_promotion,
    decide_retrain,
    record_decision,
    retrain_job_name,
)
from services.monitor.handlers import Monitor, model_prefix, utc_now
from services.monitor.storage import read_json, read_table

log = logging.getLogger("cairn.monitor.retrain")

MIN_HOLDOUT_ROWS = 10
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
            fields = body.model_dump()
            if current is None:
                return RetrainPolicy(
                    model_package_group=group, created_at=now, updated_at=now, **fields
                )
            return current.model_copy(update={**body.__dict__, "updated_at": now})

        return (await asyncio.to_thread(self.policies.update, f"{group}.json", change)).doc

    def get_policy(self, group: str) -> RetrainPolicy:
        found = self.policies.get_or_none(f"{group}.json")
        if found is None:
            raise PolicyNotFound(f"no retrain policy for model package group {group!r}")
        return found.doc

    def list_policies(self) -> list[RetrainPolicy]:
        return [item.doc for item in self.policies.list()]

    def delete_policy(self, group: str) -> None:
        self.policies.delete(f"{group}.json")

    # Drift -> retrain --------------------------------------------------------------------------

    def labelled_capture(self, endpoint: str, feature_names: list[str]) -> pd.DataFrame:
        """Every captured row of the endpoint with a ground-truth label (column `__label__`)."""
        labels = self.monitor.load_labels(endpoint)
        if not labels:
            return pd.DataFrame(columns=[*feature_names, "__label__"])
        everything = PendingRun(
            run_id="all",
            window_start=None,
            window_end=utc_now(),
            claimed_by="",
            claimed_at=utc_now(),
        )
        rows: list[CapturedRow] = self.monitor.captured_rows(endpoint, None, everything)
        batch = current_batch([row for row in rows if row.inference_key in labels], feature_names)
        frame = batch.frame.reindex(columns=feature_names)
        frame["__label__"] = [labels[key] for key in batch.inference_keys if key is not None]
        return frame

    async def on_drift(self, envelope: Envelope[DriftDetected]) -> RetrainJob | None:
        """Apply the group's policy to a drift; returns the retrain job it started or resumed."""
        drift = envelope.data
        found = await asyncio.to_thread(
            self.policies.get_or_none, f"{drift.model_package_group}.json"
        )
        if found is None or found.doc.endpoint_name != drift.endpoint_name:
            return None
        # Cheap first look: a duplicate or a drift within the cooldown reads no data.
        action, reason = decide_retrain(found.doc, drift.run_id, 1 << 62, utc_now())
        if action in ("duplicate", "cooldown"):
            log.info("drift %s on %s: %s", drift.run_id, drift.model_package_group, reason)
            await asyncio.to_thread(self._record, drift, action, reason, None, 0)
            return None
        context = await asyncio.to_thread(self._gather, drift)
        labelled = len(context["captured"])
        now = utc_now()
        job = RetrainJob(
            job_name=retrain_job_name(drift.model_package_group, drift.run_id),
            drift_run_id=drift.run_id,
            base_training_job=context["base_job"],
            base_version=drift.model_version,
            holdout_key=f"{RETRAIN_DATA}/"
            f"{retrain_job_name(drift.model_package_group, drift.run_id)}/holdout.parquet",
            correlation_id=envelope.correlation_id,
            requested_at=now,
        )
        decision = await asyncio.to_thread(self._record, drift, None, None, job, labelled)
        if decision[0] not in ("retrain", "resume"):
            log.info("drift %s: %s", drift.run_id, decision[1])
            return None
        job = (await asyncio.to_thread(self.get_policy, drift.model_package_group)).jobs[
            job.job_name
        ]
        request = await asyncio.to_thread(self._write_training_data, drift, job, context)
        await self.monitor.publish(
            RetrainRequested(
                model_package_group=drift.model_package_group,
                endpoint_name=drift.endpoint_name,
                reason=f"drift in run {drift.run_id}: "
                + ", ".join([f.feature for f in drift.features] + drift.violations)[:500],
                drift_run_id=drift.run_id,
                base_training_job=job.base_training_job,
                new_training_job=job.job_name,
            ),
            cause=envelope,
        )
        await self.monitor.publish(request, cause=envelope)
        await asyncio.to_thread(
            self._set_status, drift.model_package_group, job.job_name, "requested"
        )
        return job

    def _record(
        self,
        drift: DriftDetected,
        action: str | None,
        reason: str | None,
        job: RetrainJob | None,
        labelled: int,
    ) -> tuple[str, str]:
        """Decide again inside a conditional write, so two deliveries cannot both retrain."""
        outcome: dict[str, tuple[str, str]] = {}

        def change(current: RetrainPolicy | None) -> RetrainPolicy:
            if current is None:
                raise PolicyNotFound(f"retrain policy {drift.model_package_group} was deleted")
            decided = decide_retrain(current, drift.run_id, labelled, utc_now())
            outcome["decision"] = decided
            return record_decision(
                current, decided[0], decided[1], drift.run_id, job, labelled, utc_now()
            )

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

    def _gather(self, drift: DriftDetected) -> dict[str, Any]:
        """The drifted version's training job, its request and data, and labelled capture."""
        group, version = drift.model_package_group, drift.model_version
        version_doc = read_json(self.store, f"registry/groups/{group}/versions/{version}.json")
        if version_doc is None:
            raise ObjectNotFound(f"model {group} v{version} is not in the registry")
        manifest = self.monitor.manifest(version_doc["artifact_uri"])
        base_job = (version_doc.get("lineage") or {}).get("training_job") or manifest.get(
            "lineage", {}
        ).get("training_job")
        job_doc = read_json(self.store, f"trainer/jobs/{base_job}.json")
        if not base_job or job_doc is None:
            raise ObjectNotFound(f"the training job of {group} v{version} is not stored")
        features = [column["name"] for column in manifest["signature"]["inputs"]]
        return {
            "base_job": base_job,
            "request": TrainingJobRequested.model_validate(job_doc["request"]),
            "manifest": manifest,
            "features": features,
            "captured": self.labelled_capture(drift.endpoint_name, features),
        }

    def _write_training_data(
        self, drift: DriftDetected, job: RetrainJob, context: dict[str, Any]
    ) -> TrainingJobRequested:
        """train.parquet + holdout.parquet for the new job, and its TrainingJobRequested."""
        policy = self.get_policy(drift.model_package_group)
        original: TrainingJobRequested = context["request"]
        manifest, features = context["manifest"], context["features"]
        train_channel = next(c for c in original.input_channels if c.name == "train")
        label = manifest.get("label_column") or train_channel.label_column
        if not label:
            raise InvalidInput("retraining needs a supervised model with a label column")
        original_frame = read_table(self.store, train_channel.uri)[[*features, label]]
        captured = context["captured"].rename(columns={"__label__": label})
        captured = _conform(captured, original_frame)
        # The holdout comes from the labelled capture when there is enough of it: the champion
        # never trained on those rows, and they are the traffic the models must serve now.
        fresh = captured.sample(frac=1.0, random_state=_seed(job.job_name)).reset_index(drop=True)
        if len(fresh) >= MIN_HOLDOUT_ROWS / self.config.holdout_fraction:
            holdout_rows = int(len(fresh) * self.config.holdout_fraction)
            holdout, fresh = fresh.iloc[:holdout_rows], fresh.iloc[holdout_rows:]
            parts = [fresh] if policy.data == "captured" else [original_frame, fresh]
            train = pd.concat([part for part in parts if len(part)], ignore_index=True)
        else:
            parts = [fresh] if policy.data == "captured" else [original_frame, fresh]
            data = pd.concat([part for part in parts if len(part)], ignore_index=True)
            data = data.sample(frac=1.0, random_state=_seed(job.job_name)).reset_index(drop=True)
            holdout_rows = max(1, int(len(data) * self.config.holdout_fraction))
            holdout, train = data.iloc[:holdout_rows], data.iloc[holdout_rows:]
        if len(train) < MIN_HOLDOUT_ROWS:
            raise InvalidInput(f"only {len(train)} labelled rows to retrain on")
        prefix = f"{RETRAIN_DATA}/{job.job_name}/"
        self.store.put_bytes(prefix + "train.parquet", _parquet(train))
        self.store.put_bytes(job.holdout_key, _parquet(holdout))
        channels = [
            InputChannel(
                name="train",
                uri=prefix + "train.parquet",
                content_type="application/x-parquet",
                label_column=label,
            ),
            *[c for c in original.input_channels if c.name != "train"],
        ]
        return TrainingJobRequested(
            job_name=job.job_name,
            algorithm=original.algorithm,
            hyperparameters=original.hyperparameters,
            input_channels=channels,
            resources=original.resources,
            stopping_condition=original.stopping_condition,
            registration=RegistrationSpec(
                model_package_group=drift.model_package_group,
                approval_status="PendingManualApproval",
                description=f"retrained on drift run {drift.run_id} of {drift.endpoint_name}",
            ),
            tags={"cairn.retrain_of": job.base_training_job, "cairn.drift_run": drift.run_id},
        )

    # Challenger --------------------------------------------------------------------------------

    async def on_registered(
        self, envelope: Envelope[ModelPackageRegistered]
    ) -> ChallengerEvaluated | None:
        """Judge a retrained version against the champion; approve it when better by the margin."""
        data = envelope.data
        if data.training_job is None:
            return None
        found = await asyncio.to_thread(
            self.policies.get_or_none, f"{data.model_package_group}.json"
        )
        job = found.doc.jobs.get(data.training_job) if found is not None else None
        if found is None or job is None or job.evaluation is not None:
            return None
        policy = found.doc
        evaluation = await asyncio.to_thread(self._evaluate, policy, job, data)
        promoted, reason = decide_promotion(
            policy.metric, evaluation["challenger"], evaluation["champion"], policy.margin
        )
        event = ChallengerEvaluated(
            model_package_group=data.model_package_group,
            challenger_version=data.version,
            champion_version=evaluation["champion_version"],
            metric=policy.metric,
            challenger_score=evaluation["challenger"],
            champion_score=evaluation["champion"],
            margin=policy.margin,
            promoted=promoted,
            reason=reason,
        )
        await self.monitor.publish(event, cause=envelope)
        if promoted:
            await self.monitor.publish(
                ModelApprovalRequested(
                    model_package_group=data.model_package_group,
                    version=data.version,
                    approval_status="Approved",
                    requested_by=APPROVER,
                    reason=reason[:500],
                ),
                cause=envelope,
            )
        # Marked after publishing, so a crash in between judges again on the redelivery.
        await asyncio.to_thread(
            self._set_status,
            data.model_package_group,
            job.job_name,
            "evaluated",
            promoted=promoted,
            challenger_version=data.version,
            evaluation=event,
        )
        return event

    async def on_approval_changed(
        self, envelope: Envelope[ModelApprovalChanged]
    ) -> DeploymentRequested | None:
        """Roll out an approved challenger this policy judged, with the policy's canary rollout.

        Whoever approved it (this monitor, or a person reviewing a pending challenger), it is
        deployed; a redelivery publishes the same request again, which the deployer ignores as a
        config it already serves.
        """
        data = envelope.data
        if data.approval_status != "Approved":
            return None
        found = await asyncio.to_thread(
            self.policies.get_or_none, f"{data.model_package_group}.json"
        )
        if found is None:
            return None
        # The version's training job names the retrain job: the approval may overtake the
        # handler that judged it, before the job records its challenger version.
        training_job = await asyncio.to_thread(
            self._training_job_of, data.model_package_group, data.version
        )
        job = found.doc.jobs.get(training_job) if training_job else None
        if job is None or job.status == "claimed":
            return None
        policy = found.doc
        variant_name = job.deployed_variant or await asyncio.to_thread(
            self._variant_name, policy.endpoint_name
        )
        request = DeploymentRequested(
            endpoint_name=policy.endpoint_name,
            action="update",
            production_variants=[
                VariantSpec(
                    variant_name=variant_name,
                    model_package_group=data.model_package_group,
                    model_version=data.version,
                )
            ],
            rollout=policy.rollout,
        )
        if job.status != "deploy_requested":
            await asyncio.to_thread(
                self._set_status,
                data.model_package_group,
                job.job_name,
                "deploy_requested",
                deploy_requested_at=utc_now(),
                deployed_variant=variant_name,
            )
        await self.monitor.publish(request, cause=envelope)
        return request

    def _training_job_of(self, group: str, version: int) -> str | None:
        doc = read_json(self.store, f"registry/groups/{group}/versions/{version}.json")
        lineage = (doc or {}).get("lineage") or {}
        job = lineage.get("training_job")
        return str(job) if job else None

    def _variant_name(self, endpoint: str) -> str:
        """The name the endpoint serves its model under now (the canary replaces that variant)."""
        served = self.monitor.served_model(endpoint)
        return served.variant_name if served is not None else "AllTraffic"

    def _evaluate(
        self, policy: RetrainPolicy, job: RetrainJob, data: ModelPackageRegistered
    ) -> dict[str, Any]:
        holdout = pq.read_table(io.BytesIO(self.store.get_bytes(job.holdout_key))).to_pandas()
        served = self.monitor.served_model(policy.endpoint_name)
        champion_version = served.version if served else job.base_version
        champion_uri = served.artifact_uri if served else None
        if champion_uri is None:
            doc = read_json(
                self.store,
                f"registry/groups/{data.model_package_group}/versions/{champion_version}.json",
            )
            champion_uri = doc["artifact_uri"] if doc else None
        challenger = _score(self.store, data.artifact_uri, holdout, policy.metric)
        champion = (
            _score(self.store, champion_uri, holdout, policy.metric) if champion_uri else None
        )
        return {
            "challenger": challenger,
            "champion": champion,
            "champion_version": champion_version if champion_uri else None,
        }


def _score(store: Any, artifact_uri: str, holdout: pd.DataFrame, metric: str) -> float:
    """The model's `metric` on the holdout (same rows for challenger and champion)."""
    model = load_model(store, model_prefix(store, artifact_uri))
    manifest = model.manifest
    label = manifest.label_column or holdout.columns[-1]
    records = (
        holdout[model.input_names].astype(object).where(holdout[model.input_names].notna(), None)
    ).to_dict("records")
    predictions = model.predict(model.encode_records(records))
    values = [list(map(float, row)) if np.ndim(row) else float(row) for row in predictions]
    metrics = quality_metrics(manifest.task, manifest.class_labels, values, list(holdout[label]))
    if metric not in metrics:
        raise InvalidInput(f"metric {metric!r} cannot be computed for a {manifest.task} model")
    return metrics[metric]


def _conform(captured: pd.DataFrame, original: pd.DataFrame) -> pd.DataFrame:
    """Captured cells (CSV text) typed like the original training columns."""
    typed = captured.reindex(columns=original.columns)
    for column in original.columns:
        if pd.api.types.is_numeric_dtype(original[column]):
            typed[column] = pd.to_numeric(typed[column], errors="coerce")
        else:
            typed[column] = typed[column].map(lambda v: None if v is None else str(v))
    return typed


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def _seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
