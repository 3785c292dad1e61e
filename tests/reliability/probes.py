"""One valid, cheap event per consumed event type: the event sent behind the poison.

Most probes name aggregates nobody has (a job, a group, an endpoint), so the handler looks, finds
nothing and returns, or refuses the request the way its contract says, with a failure event naming
the job (`answers`). A few need something to act on and `seed` it first through the service's own
code or the store as its writer leaves it (an approved model version, a feature group, a dataset);
their answer is the real effect (an endpoint created, records ingested). Either way the handler
finished: its consumer group's processed-ledger records the event id, which the bus writes only
after the handler returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from cairn.contracts.async_events import AsyncInferenceRequested
from cairn.contracts.batch_events import (
    TransformInput,
    TransformJobCompleted,
    TransformJobFailed,
    TransformJobRequested,
    TransformJobStopped,
    TransformOutput,
    TransformShardCompleted,
    TransformShardRequested,
)
from cairn.contracts.events import (
    DatasetIngested,
    DatasetRegistrationRequested,
    DatasetRejected,
    DeploymentFailed,
    DeploymentRequested,
    DeploymentRolledBack,
    DriftDetected,
    EndpointMetricsReported,
    EndpointUpdated,
    FeatureDefinition,
    FeatureGroupCreationRequested,
    FeatureIngestionRequested,
    FeatureRecordsPut,
    GroundTruthRecorded,
    InferenceCaptured,
    InputChannel,
    ModelApprovalChanged,
    ModelApprovalRequested,
    ModelPackageRegistered,
    MonitoringScheduleRequested,
    RegistrationSpec,
    TrainingJobCompleted,
    TrainingJobFailed,
    TrainingJobProgressed,
    TrainingJobRequested,
    TrainingJobStarted,
    TrainingSetRequested,
    VariantSpec,
    VariantTraffic,
)
from cairn.contracts.labeling_events import LabelingJobRequested
from cairn.contracts.pipeline_events import (
    ModelRegistrationFailed,
    ModelRegistrationRequested,
    PipelineCallbackRequested,
    PipelineExecutionFailed,
    PipelineExecutionStarted,
    PipelineExecutionStopped,
    PipelineExecutionSucceeded,
    PipelineStepStarted,
    PipelineStepSucceeded,
)
from cairn.contracts.processing_events import (
    ProcessingInput,
    ProcessingJobCompleted,
    ProcessingJobFailed,
    ProcessingJobRequested,
    ProcessingJobStarted,
)
from cairn.contracts.review_events import (
    HumanLoopConfig,
    HumanLoopConfigured,
    HumanReviewRequested,
    Payload,
)
from cairn.contracts.state import ModelVersionView, write_state
from cairn.contracts.training_events import GpuTrainingJobRequested
from cairn.contracts.tuner_events import (
    HyperParameterTuningJobCompleted,
    HyperParameterTuningJobFailed,
    HyperParameterTuningJobRequested,
    HyperParameterTuningJobStarted,
    HyperParameterTuningJobStopped,
    ParameterRanges,
    TrainingJobDefinition,
    TrainingJobStopped,
    TrainingJobStopRequested,
    TuningObjective,
    TuningTrialCompleted,
)
from cairn.datasets import write_dataset_version
from cairn.service import Service
from pydantic import BaseModel

Seed = Callable[[Service, str], Awaitable[None]]


@dataclass(frozen=True)
class Probe:
    """Makes a valid event for a unique name.

    `answers`: service -> the event it answers with (correlated with the probe);
    `seed`: makes what the event needs to be acted on, through the service's own code.
    """

    make: Callable[[str], BaseModel]
    answers: dict[str, str] = field(default_factory=dict)
    seed: Seed | None = None


async def _approved_model(service: Service, name: str) -> None:
    """Version 1 of group `name`, Approved, as the registry stores it."""
    model = ModelVersionView(
        model_package_group=name,
        version=1,
        artifact_uri=f"models/{name}/",
        approval_status="Approved",
    )
    await asyncio.to_thread(write_state, service.store, model, name, "1")


def _feature_group(name: str) -> FeatureGroupCreationRequested:
    return FeatureGroupCreationRequested(
        feature_group_name=name,
        record_identifier_feature_name="id",
        event_time_feature_name="ts",
        feature_definitions=[
            FeatureDefinition(name="id", type="String"),
            FeatureDefinition(name="ts", type="Fractional"),
        ],
        ttl_s=3600.0,
    )


async def _group(service: Service, name: str) -> None:
    await service.api.state.featurestore.create_group(_feature_group(name))


async def _group_and_dataset(service: Service, name: str) -> None:
    await _group(service, name)
    rows = pa.table({"id": ["a", "b"], "ts": [1.5, 2.5]})
    await asyncio.to_thread(write_dataset_version, service.store, name, rows)


def _channel(name: str) -> list[InputChannel]:
    return [InputChannel(name="train", uri=f"data/{name}/train.csv", label_column="y")]


def _refused_training(name: str) -> TrainingJobRequested:
    """A channel in another service's namespace: the trainer refuses it, failing the job by name."""
    return TrainingJobRequested(
        job_name=name,
        algorithm="xgboost",
        input_channels=[InputChannel(name="train", uri="platform/keys/")],
    )


def _execution(name: str) -> dict[str, str]:
    return {"execution_id": name[:64], "pipeline_name": name[:63]}


PROBES: dict[str, Probe] = {
    # Trainer: a channel in another service's namespace is refused, failing the job by name.
    "TrainingJobRequested": Probe(_refused_training, {"trainer": "TrainingJobFailed"}),
    "GpuTrainingJobRequested": Probe(
        lambda n: GpuTrainingJobRequested(job_name=n, request=_refused_training(n))
    ),
    "TrainingJobStarted": Probe(
        lambda n: TrainingJobStarted(job_name=n, worker_id="poison", device="cpu")
    ),
    "TrainingJobStopRequested": Probe(lambda n: TrainingJobStopRequested(job_name=n)),
    "TrainingJobProgressed": Probe(
        lambda n: TrainingJobProgressed(job_name=n, iteration=1, metrics={"train:auc": 0.5})
    ),
    # The registry registers the model the job asked for; the tuner knows no such trial.
    "TrainingJobCompleted": Probe(
        lambda n: TrainingJobCompleted(
            job_name=n,
            algorithm="xgboost",
            artifact_uri=f"models/{n}/",
            metrics={"validation:auc": 0.75},
            device="cpu",
            training_time_s=1.5,
            total_time_s=2.0,
            registration=RegistrationSpec(model_package_group=n),
        ),
        {"registry": "ModelPackageRegistered"},
    ),
    "TrainingJobFailed": Probe(lambda n: TrainingJobFailed(job_name=n, reason="poison suite")),
    "TrainingJobStopped": Probe(lambda n: TrainingJobStopped(job_name=n, training_time_s=0.5)),
    # Tuner: an objective xgboost never reports is refused, failing the tuning job by name.
    "HyperParameterTuningJobRequested": Probe(
        lambda n: HyperParameterTuningJobRequested(
            tuning_job_name=n[:32],
            objective=TuningObjective(metric_name="validation:no-such-metric"),
            parameter_ranges=ParameterRanges(),
            training_job_definition=TrainingJobDefinition(
                algorithm="xgboost", input_channels=_channel(n), max_runtime_s=60
            ),
        ),
        {"tuner": "HyperParameterTuningJobFailed"},
    ),
    "HyperParameterTuningJobCompleted": Probe(
        lambda n: HyperParameterTuningJobCompleted(tuning_job_name=n[:32], trials_completed=1)
    ),
    "ModelPackageRegistered": Probe(
        lambda n: ModelPackageRegistered(
            model_package_group=n,
            version=1,
            artifact_uri=f"models/{n}/",
            approval_status="PendingManualApproval",
            metrics={"validation:auc": 0.7},
        )
    ),
    "ModelApprovalChanged": Probe(
        lambda n: ModelApprovalChanged(
            model_package_group=n, version=1, approval_status="Rejected", changed_by="poison"
        )
    ),
    "ModelApprovalRequested": Probe(
        lambda n: ModelApprovalRequested(
            model_package_group=n, version=1, approval_status="Rejected", requested_by="poison"
        )
    ),
    # Deployer: an endpoint on a version the registry approved.
    "DeploymentRequested": Probe(
        lambda n: DeploymentRequested(
            endpoint_name=n,
            production_variants=[
                VariantSpec(variant_name="main", model_package_group=n, model_version=1)
            ],
        ),
        {"deployer": "EndpointUpdated"},
        seed=_approved_model,
    ),
    "EndpointUpdated": Probe(
        lambda n: EndpointUpdated(endpoint_name=n, revision=3, status="Deleted")
    ),
    "EndpointMetricsReported": Probe(
        lambda n: EndpointMetricsReported(
            endpoint_name=n,
            window_s=30.0,
            variants=[
                VariantTraffic(
                    variant_name="main",
                    requests=10,
                    errors=0,
                    p50_latency_ms=1.5,
                    p99_latency_ms=4.0,
                )
            ],
        )
    ),
    "InferenceCaptured": Probe(
        lambda n: InferenceCaptured(
            endpoint_name=n, variant_name="main", capture_uri=f"capture/{n}/x.jsonl", record_count=2
        )
    ),
    "GroundTruthRecorded": Probe(
        lambda n: GroundTruthRecorded(endpoint_name=n, labels={"inference-1": 1})
    ),
    "DriftDetected": Probe(
        lambda n: DriftDetected(
            endpoint_name=n,
            run_id="run-1",
            model_package_group=n,
            model_version=1,
            report_uri=f"monitoring/{n}/report.json",
        )
    ),
    "MonitoringScheduleRequested": Probe(
        lambda n: MonitoringScheduleRequested(endpoint_name=n, action="delete", interval_s=60.0)
    ),
    # Ingest: nothing under the prefix, so the registration is rejected with a reason.
    "DatasetRegistrationRequested": Probe(
        lambda n: DatasetRegistrationRequested(dataset_name=n, source_uri=f"data/{n}/"),
        {"ingest": "DatasetRejected"},
    ),
    "FeatureGroupCreationRequested": Probe(_feature_group, {"featurestore": "FeatureGroupCreated"}),
    "FeatureRecordsPut": Probe(
        lambda n: FeatureRecordsPut(feature_group_name=n, records=[{"id": "a", "ts": 1.5}]),
        {"featurestore": "FeatureIngestionCompleted"},
        seed=_group,
    ),
    "FeatureIngestionRequested": Probe(
        lambda n: FeatureIngestionRequested(feature_group_name=n, dataset_uri=f"dataset://{n}@1"),
        {"featurestore": "FeatureIngestionCompleted"},
        seed=_group_and_dataset,
    ),
    "TrainingSetRequested": Probe(
        lambda n: TrainingSetRequested(
            training_set_name=n,
            entity_dataset_uri=f"dataset://{n}@1",
            entity_id_column="id",
            entity_time_column="ts",
            features=[n],
        ),
        {"featurestore": "TrainingSetFailed"},
    ),
    # Batch: a model nobody registered fails the job by name.
    "TransformJobRequested": Probe(
        lambda n: TransformJobRequested(
            job_name=n,
            model_package_group=n,
            model_version=1,
            transform_input=TransformInput(data_source=f"data/{n}/"),
            transform_output=TransformOutput(output_path=f"outputs/{n}/"),
        ),
        {"batch": "TransformJobFailed"},
    ),
    # The async worker reads the endpoint when it runs the request: none by that name, so it
    # writes the failure object and answers with AsyncInferenceFailed.
    "AsyncInferenceRequested": Probe(
        lambda n: AsyncInferenceRequested(
            inference_id=n[:64],
            endpoint_name=n[:63],
            input_key=f"uploads/async/{n}/in.csv",
            output_key=f"outputs/async/{n}/out.out",
            failure_key=f"outputs/async/{n}/failures/out-error.out",
            received_at=datetime.now(UTC),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        ),
        {"gateway": "AsyncInferenceFailed"},
    ),
    "TransformShardRequested": Probe(
        lambda n: TransformShardRequested(shard_id=f"{n}/0", job_name=n, shard_index=0, attempt=1)
    ),
    "TransformShardCompleted": Probe(
        lambda n: TransformShardCompleted(
            job_name=n,
            shard_index=0,
            records_in=2,
            records_out=2,
            records_failed=0,
            elapsed_s=0.25,
            worker_id="poison",
        )
    ),
    # Tuner lifecycle, read by experiments and pipelines: no such tuning job or run yet.
    "HyperParameterTuningJobStarted": Probe(
        lambda n: HyperParameterTuningJobStarted(
            tuning_job_name=n[:32], strategy="Random", max_number_of_training_jobs=2
        )
    ),
    "HyperParameterTuningJobFailed": Probe(
        lambda n: HyperParameterTuningJobFailed(tuning_job_name=n[:32], reason="poison suite")
    ),
    "HyperParameterTuningJobStopped": Probe(
        lambda n: HyperParameterTuningJobStopped(tuning_job_name=n[:32])
    ),
    "TuningTrialCompleted": Probe(
        lambda n: TuningTrialCompleted(
            tuning_job_name=n[:32],
            trial_number=0,
            training_job_name=n,
            status="Failed",
            parameters={"eta": 0.1},
        )
    ),
    # Processing: an input in another service's namespace is refused, failing the job by name.
    "ProcessingJobRequested": Probe(
        lambda n: ProcessingJobRequested(
            job_name=n,
            builtin="data-quality",
            inputs=[ProcessingInput(input_name="data", source="platform/keys/")],
        ),
        {"trainer": "ProcessingJobFailed"},
    ),
    "ProcessingJobStarted": Probe(lambda n: ProcessingJobStarted(job_name=n, worker_id="poison")),
    "ProcessingJobCompleted": Probe(
        lambda n: ProcessingJobCompleted(
            job_name=n, logs_key=f"processing/{n}/logs.txt", processing_time_s=0.5
        )
    ),
    "ProcessingJobFailed": Probe(lambda n: ProcessingJobFailed(job_name=n, reason="poison suite")),
    # Pipelines: executions and callbacks nobody started.
    "PipelineExecutionStarted": Probe(
        lambda n: PipelineExecutionStarted(**_execution(n), pipeline_version=1, started_by="poison")
    ),
    "PipelineExecutionSucceeded": Probe(lambda n: PipelineExecutionSucceeded(**_execution(n))),
    "PipelineExecutionFailed": Probe(
        lambda n: PipelineExecutionFailed(**_execution(n), reason="poison suite")
    ),
    "PipelineExecutionStopped": Probe(
        lambda n: PipelineExecutionStopped(**_execution(n), stopped_by="poison")
    ),
    "PipelineStepStarted": Probe(
        lambda n: PipelineStepStarted(
            **_execution(n), step_name="train", step_type="Training", attempt=1, request_id=n
        )
    ),
    "PipelineStepSucceeded": Probe(
        lambda n: PipelineStepSucceeded(**_execution(n), step_name="train", step_type="Training")
    ),
    "PipelineCallbackRequested": Probe(
        lambda n: PipelineCallbackRequested(callback_token=f"{n}-callback-token")
    ),
    # Registry: a registration of an artifact that does not exist is refused by name.
    "ModelRegistrationRequested": Probe(
        lambda n: ModelRegistrationRequested(
            model_package_group=n[:63], artifact_uri=f"models/{n}/", training_job=n
        )
    ),
    "ModelRegistrationFailed": Probe(
        lambda n: ModelRegistrationFailed(
            model_package_group=n[:63], training_job=n, reason="poison suite"
        )
    ),
    # Facts other services read (pipelines' triggers and steps, labeling's registrations).
    "DatasetIngested": Probe(
        lambda n: DatasetIngested(
            dataset_name=n,
            version=1,
            uri=f"dataset://{n}@1",
            location=f"datasets/{n}/1/",
            sha256="0" * 64,
            row_count=0,
            columns=[],
            created=True,
        )
    ),
    "DatasetRejected": Probe(
        lambda n: DatasetRejected(dataset_name=n, source_uri=f"data/{n}/", reason="poison suite")
    ),
    "DeploymentFailed": Probe(
        lambda n: DeploymentFailed(
            endpoint_name=n, action="create", reason="poison suite", failure_code="poison"
        )
    ),
    "DeploymentRolledBack": Probe(
        lambda n: DeploymentRolledBack(
            endpoint_name=n, rolled_back_variant="canary", restored_revision=1, reason="poison"
        )
    ),
    "TransformJobCompleted": Probe(
        lambda n: TransformJobCompleted(
            job_name=n,
            output_path=f"outputs/{n}/",
            manifest_key=f"outputs/{n}/manifest.json",
            records_in=1,
            records_out=1,
            records_failed=0,
            elapsed_s=0.5,
        )
    ),
    "TransformJobFailed": Probe(lambda n: TransformJobFailed(job_name=n, reason="poison suite")),
    "TransformJobStopped": Probe(
        lambda n: TransformJobStopped(job_name=n, shards_done=0, shards_total=1)
    ),
    # Labeling: a job on a dataset nobody registered fails by name.
    "LabelingJobRequested": Probe(
        lambda n: LabelingJobRequested(
            job_name=n[:63],
            dataset_uri=f"dataset://{n}@1",
            task_type="text-classification",
            labels=["a", "b"],
            workforce_name=n[:63],
        )
    ),
    "HumanLoopConfigured": Probe(
        lambda n: HumanLoopConfigured(
            endpoint_name=n,
            revision=1,
            config=HumanLoopConfig(random_sampling_percentage=5.0, labels=["0", "1"]),
        )
    ),
    "HumanReviewRequested": Probe(
        lambda n: HumanReviewRequested(
            review_id=n.replace("_", "-")[:64].ljust(8, "x"),
            endpoint_name=n,
            variant_name="main",
            requested_at=datetime.now(UTC),
            reasons=["poison suite"],
            input=Payload(content_type="text/csv", data="1,2"),
            output=Payload(content_type="application/json", data='{"predictions": [0.5]}'),
            labels=["0", "1"],
            review_dataset=f"{n}-reviews"[:63],
        )
    ),
}


def _gateway_applied(service: Service, data: BaseModel) -> bool:
    gateway = service.api.state.gateway
    if isinstance(data, HumanLoopConfigured):
        applied = gateway.human_loop.configs.get(data.endpoint_name)
        return applied is not None and applied[0] == data.revision
    assert isinstance(data, EndpointUpdated)
    return bool(gateway.table.revisions.get(data.endpoint_name) == data.revision)


# A broadcast reader keeps no ledger: its effect is read off the running service.
BROADCAST_EFFECTS: dict[str, Callable[[Service, BaseModel], bool]] = {
    "gateway": _gateway_applied,
}
