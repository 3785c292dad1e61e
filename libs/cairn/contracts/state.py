"""Stored-state contracts: documents one service writes and others read, declared like events.

Rule 1 of the architecture: no service names another's store prefix. When a reader needs what a
writer stores, the writer's document is declared here as a versioned view (the fields readers
may rely on; extra fields are ignored, so the writer may add more) with its owner and its key
layout. Readers call `read_state` / `list_states`, which validate against the view and log and
skip an unreadable document instead of failing. `cairn contracts` emits each view as JSON Schema
into `contracts/state/`, checked for drift like the events; each writer has a test that its real
document validates against its view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cairn.contracts.async_events import AsyncInferenceConfig
from cairn.contracts.events import VariantState
from cairn.errors import ObjectNotFound
from cairn.store.base import ObjectStore

log = logging.getLogger("cairn.contracts.state")

ViewT = TypeVar("ViewT", bound=BaseModel)


@dataclass(frozen=True)
class StateSpec:
    """What the platform knows about one shared document type."""

    name: str
    model: type[BaseModel]
    owner: str
    prefix: str
    key_pattern: str
    version: int
    description: str

    def key(self, *parts: str) -> str:
        return self.prefix + self.key_pattern.format(*parts)


_STATES: dict[type[BaseModel], StateSpec] = {}


def state_contract(
    *, owner: str, prefix: str, key: str = "{0}.json", version: int = 1
) -> Callable[[type[ViewT]], type[ViewT]]:
    """Register a view model as the contract of documents `prefix + key.format(*parts)`."""

    def register(model: type[ViewT]) -> type[ViewT]:
        doc = (model.__doc__ or "").strip().splitlines()
        _STATES[model] = StateSpec(
            name=model.__name__,
            model=model,
            owner=owner,
            prefix=prefix,
            key_pattern=key,
            version=version,
            description=doc[0] if doc else "",
        )
        return model

    return register


def state_spec(model: type[BaseModel]) -> StateSpec:
    return _STATES[model]


def all_states() -> list[StateSpec]:
    return sorted(_STATES.values(), key=lambda spec: spec.name)


def read_state(store: ObjectStore, model: type[ViewT], *parts: str) -> ViewT | None:
    """The document at the contract's key, validated; None when absent or unreadable (logged)."""
    key = state_spec(model).key(*parts)
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound:
        return None
    return _validate(model, key, raw)


def list_states(store: ObjectStore, model: type[ViewT]) -> list[ViewT]:
    """Every readable document of the contract directly under its prefix (others logged)."""
    spec = state_spec(model)
    suffix = spec.key_pattern.format("")
    found: list[ViewT] = []
    for info in store.list(spec.prefix, recursive=False):
        if not info.key.endswith(suffix):
            continue
        try:
            raw = store.get_bytes(info.key)
        except ObjectNotFound:
            continue
        view = _validate(model, info.key, raw)
        if view is not None:
            found.append(view)
    return found


def write_state(store: ObjectStore, view: BaseModel, *parts: str) -> None:
    """For a writer that keeps no richer private document: store the view itself."""
    key = state_spec(type(view)).key(*parts)
    store.put_bytes(key, view.model_dump_json().encode(), content_type="application/json")


def _validate(model: type[ViewT], key: str, raw: bytes) -> ViewT | None:
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        log.error("skipping %s: not a valid %s (%s)", key, model.__name__, error.error_count())
        return None


class _View(BaseModel):
    # A non-finite float has no JSON form: a document holding one is skipped like any invalid one.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


@state_contract(owner="deployer", prefix="deployer/endpoints/")
class EndpointStateView(_View):
    """An endpoint's current desired state: revision, status, variants with their models."""

    endpoint_name: str
    revision: int = Field(ge=1)
    status: Literal["Creating", "Updating", "InService", "RollingBack", "Deleted", "Failed"]
    production_variants: list[VariantState] = Field(default_factory=list)
    shadow_variant: VariantState | None = None
    updated_at: datetime | None = None
    async_inference_config: AsyncInferenceConfig | None = Field(
        default=None, description="InvokeEndpointAsync settings; none: the defaults."
    )


class ModelLineageView(_View):
    training_job: str | None = None
    datasets: list[dict[str, Any]] = Field(default_factory=list)


@state_contract(owner="registry", prefix="registry/groups/", key="{0}/versions/{1}.json")
class ModelVersionView(_View):
    """A registered model version: its artifact, approval, metrics and lineage."""

    model_package_group: str
    version: int = Field(ge=1)
    artifact_uri: str
    approval_status: str
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: ModelLineageView = Field(default_factory=ModelLineageView)
    created_at: datetime | None = None


@state_contract(owner="trainer", prefix="trainer/jobs/")
class TrainingJobView(_View):
    """A training job: the request it ran, status, metrics and the artifact it produced."""

    job_name: str
    request: dict[str, Any]
    status: str
    correlation_id: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_uri: str | None = None
    failure_reason: str | None = None


@state_contract(owner="gateway", prefix="capture/", key="{0}/{1}/{2:%Y/%m/%d/%H}/{3}.jsonl")
class CaptureRecord(_View):
    """One captured request in SageMaker's data-capture layout (one JSON line of a file).

    Files: `capture/<endpoint>/<variant>/yyyy/mm/dd/hh/<name>.jsonl`, named after the hour of
    their first record.
    """

    captureData: dict[str, Any]
    eventMetadata: dict[str, Any] = Field(default_factory=dict)
    eventVersion: str = "0"


CAPTURE_PREFIX = state_spec(CaptureRecord).prefix


def capture_variant_prefix(endpoint: str, variant: str) -> str:
    """Where one variant's capture files start (`capture/<endpoint>/<variant>/`)."""
    return f"{CAPTURE_PREFIX}{endpoint}/{variant}/"


def capture_file_key(endpoint: str, variant: str, at: datetime, name: str) -> str:
    return state_spec(CaptureRecord).key(endpoint, variant, at, name)  # type: ignore[arg-type]


@state_contract(owner="*", prefix="platform/pools/")
class WorkerPoolDeclaration(BaseModel):
    """A worker pool its owning service declares; the autoscaler sizes it on its group's lag."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    service: str = Field(description="The service that declared (and owns) the pool.")
    module: str = Field(description="`python -m <module>` starts one worker.")
    args: list[str] = Field(default_factory=list, description="Extra command-line arguments.")
    group_id: str = Field(description="The consumer group whose lag sizes the pool.")
    event_types: list[str] = Field(min_length=1, description="Event types the workers consume.")
    lag_threshold: int = Field(default=5, ge=1, description="Target lag per replica.")
    activation_lag_threshold: int = Field(
        default=0, ge=0, description="At or below this lag a pool with min 0 scales to zero."
    )
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    polling_interval_s: float = Field(default=2.0, gt=0)
    scale_down_cooldown_s: float = Field(
        default=60.0, ge=0, description="Scale down only once desire stayed lower this long."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra worker environment.")
    gpu: bool = Field(
        default=False, description="Workers ask for GPU devices (Docker, Kubernetes)."
    )
    image: str | None = Field(default=None, description="Container image; default the platform's.")
