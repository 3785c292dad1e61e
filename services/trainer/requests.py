"""Checks on what a request asks of the trainer's scale-out features, before anything runs.

Each refusal is an `InvalidInput` naming the request field, so the route answers 400 and a
request from the bus is dead-lettered with the same reason. A checkpoint prefix belongs to the
first job that names it (`trainer/checkpoint-owners/`), so two jobs never resume each other.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from cairn.contracts.envelope import utc_now
from cairn.contracts.events import TrainingJobRequested
from cairn.documents import DocumentStore
from cairn.errors import InvalidInput, PreconditionFailed
from cairn.namespaces import confine
from cairn.store.base import ObjectStore
from pydantic import BaseModel, Field

from services.trainer.config import TrainerSettings

OWNERS_PREFIX = "trainer/checkpoint-owners"
CHECKPOINT_NAMESPACE = "outputs/"
DISTRIBUTED_ALGORITHMS = frozenset({"xgboost", "script"})
STREAMING_ALGORITHMS = frozenset({"xgboost", "script"})
CHECKPOINTING_ALGORITHMS = frozenset({"xgboost", "script"})


class CheckpointOwner(BaseModel):
    """Which job a checkpoint prefix belongs to."""

    prefix: str
    job_name: str
    claimed_at: datetime = Field(default_factory=utc_now)


def _kind(request: TrainingJobRequested) -> str:
    return "script" if request.image else request.algorithm


def check_scaling(request: TrainingJobRequested, settings: TrainerSettings) -> None:
    """Refuse instance counts, input modes and limits this trainer cannot honour.

    Raises:
        InvalidInput: the message and `field` name the offending request field.
    """
    kind = _kind(request)
    count = request.resources.instance_count
    if count < 1:
        raise InvalidInput(
            f"resources.instance_count: {count} is below 1", field="resources.instance_count"
        )
    if count > settings.max_instance_count:
        raise InvalidInput(
            f"resources.instance_count: {count} is above this trainer's maximum "
            f"({settings.max_instance_count}, CAIRN_TRAINER_MAX_INSTANCE_COUNT)",
            field="resources.instance_count",
        )
    if count > 1 and kind not in DISTRIBUTED_ALGORITHMS:
        raise InvalidInput(
            f"resources.instance_count: {kind} trains in one process; "
            f"instance_count > 1 needs one of {sorted(DISTRIBUTED_ALGORITHMS)}",
            field="resources.instance_count",
        )
    if request.input_mode == "Pipe" and kind not in STREAMING_ALGORITHMS:
        raise InvalidInput(
            f"input_mode: {kind} cannot stream its input; Pipe needs one of "
            f"{sorted(STREAMING_ALGORITHMS)} (use File or FastFile)",
            field="input_mode",
        )
    if request.input_mode == "Pipe" and count > 1:
        raise InvalidInput(
            "input_mode: Pipe streams into one process; use File with instance_count > 1",
            field="input_mode",
        )
    stopping = request.stopping_condition
    if stopping.max_wait_time_s is not None and stopping.max_wait_time_s < stopping.max_runtime_s:
        raise InvalidInput(
            f"stopping_condition.max_wait_time_s: {stopping.max_wait_time_s} is below "
            f"max_runtime_s ({stopping.max_runtime_s})",
            field="stopping_condition.max_wait_time_s",
        )
    if request.checkpoint_config is not None and kind not in CHECKPOINTING_ALGORITHMS:
        raise InvalidInput(
            f"checkpoint_config: {kind} does not checkpoint; use one of "
            f"{sorted(CHECKPOINTING_ALGORITHMS)}",
            field="checkpoint_config",
        )


def checkpoint_prefix(request: TrainingJobRequested, store: ObjectStore) -> str | None:
    """The store prefix of the job's checkpoints (confined to outputs/), or None."""
    config = request.checkpoint_config
    if config is None:
        return None
    field = "checkpoint_config.uri"
    key = confine(config.uri, field=field, store=store).strip("/")
    if not (key + "/").startswith(CHECKPOINT_NAMESPACE):
        raise InvalidInput(
            f"{field}: {key!r} must lie under {CHECKPOINT_NAMESPACE}",
            field=field,
            allowed=[CHECKPOINT_NAMESPACE],
        )
    return key


def claim_checkpoint_prefix(request: TrainingJobRequested, store: ObjectStore) -> str | None:
    """Record this job as the owner of its checkpoint prefix; refuse one another job owns.

    Raises:
        InvalidInput: the prefix lies outside outputs/ or belongs to another job.
    """
    prefix = checkpoint_prefix(request, store)
    if prefix is None:
        return None
    owners: DocumentStore[CheckpointOwner] = DocumentStore(store, CheckpointOwner, OWNERS_PREFIX)
    key = hashlib.sha256(prefix.encode()).hexdigest() + ".json"
    try:
        owners.create(key, CheckpointOwner(prefix=prefix, job_name=request.job_name))
    except PreconditionFailed:
        found = owners.get_or_none(key)
        owner = found.doc.job_name if found is not None else "?"
        if owner != request.job_name:
            raise InvalidInput(
                f"checkpoint_config.uri: {prefix!r} holds the checkpoints of job {owner!r}; "
                "give this job a prefix of its own",
                field="checkpoint_config.uri",
            ) from None
    return prefix
