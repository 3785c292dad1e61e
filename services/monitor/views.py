"""What the monitor reads of other services' state, through their declared contracts.

The deployer's endpoint state, the registry's model versions and the trainer's jobs are read as
the views in `cairn.contracts.state`: a document that is missing, unreadable or not a valid view
reads as None (the kernel logs it), so the monitor skips that work and keeps running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cairn.contracts.events import TrainingJobRequested
from cairn.contracts.state import (
    EndpointStateView,
    ModelVersionView,
    TrainingJobView,
    read_state,
)
from cairn.store.base import ObjectStore
from pydantic import ValidationError

log = logging.getLogger("cairn.monitor.views")


@dataclass(frozen=True)
class ServedModel:
    """The model behind an endpoint's primary (highest-weight) production variant."""

    variant_name: str
    group: str
    version: int
    artifact_uri: str


def served_model(store: ObjectStore, endpoint: str) -> ServedModel | None:
    """The endpoint's primary model, or None when it serves nothing (or is deleted)."""
    state = read_state(store, EndpointStateView, endpoint)
    if state is None or state.status == "Deleted" or not state.production_variants:
        return None
    primary = max(state.production_variants, key=lambda variant: variant.weight)
    return ServedModel(
        primary.variant_name,
        primary.model_package_group,
        primary.model_version,
        primary.artifact_uri,
    )


def model_version(store: ObjectStore, group: str, version: int) -> ModelVersionView | None:
    """The registry's view of one version, or None when it is not registered (or unreadable)."""
    return read_state(store, ModelVersionView, group, str(version))


def training_request(store: ObjectStore, job_name: str) -> TrainingJobRequested | None:
    """The request a stored training job ran with, or None when it is not stored (or unreadable)."""
    job = read_state(store, TrainingJobView, job_name)
    if job is None:
        return None
    try:
        return TrainingJobRequested.model_validate(job.request)
    except ValidationError:
        log.error("training job %s holds no valid request", job_name)
        return None
