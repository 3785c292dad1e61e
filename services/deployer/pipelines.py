"""Inference pipelines: a variant whose `containers` chain models, checked before it is served.

The gateway feeds step k's output matrix to step k+1 as its input matrix, so a chain is only
deployable when every step is a built-in format (it runs inside the gateway) and each step's
outputs are, by count and name, the next step's inputs. Refusing here at create time turns what
would be a model error on every request into one 400 naming the step.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from cairn.artifacts import read_manifest
from cairn.artifacts.manifest import ModelManifest
from cairn.contracts.events import (
    ContainerSpec,
    DeploymentRequested,
    VariantSpec,
)
from cairn.errors import CairnError, InvalidInput
from cairn.store.base import ObjectStore

from services.deployer.documents import ModelRecord

IN_PROCESS_FRAMEWORKS = frozenset({"xgboost", "sklearn"})

ModelRef = tuple[str, int]


class PipelineSignatureMismatch(InvalidInput):
    """Step k's outputs cannot feed step k+1's inputs (count or names differ)."""

    code = "pipeline_signature_mismatch"


class PipelineStepUnsupported(InvalidInput):
    """A step cannot run in the gateway's process (a script or container package)."""

    code = "pipeline_step_unsupported"


@dataclass(frozen=True)
class Step:
    """One container of a chain with what the check needs from its manifest."""

    number: int
    ref: ModelRef
    manifest: ModelManifest

    @property
    def label(self) -> str:
        group, version = self.ref
        return f"step {self.number} ({group} v{version})"


def _ref(container: ContainerSpec) -> ModelRef:
    return container.model_package_group, container.model_version


def pipeline_specs(request: DeploymentRequested) -> list[VariantSpec]:
    """The request's variants that chain more than one model."""
    specs = [*request.production_variants, *filter(None, [request.shadow_variant])]
    return [spec for spec in specs if len(spec.containers) > 1]


def read_pipeline_manifests(
    store: ObjectStore, request: DeploymentRequested, models: Mapping[ModelRef, ModelRecord]
) -> dict[ModelRef, ModelManifest]:
    """The manifest of every registered chain step (unknown ones are refused later, by name)."""
    manifests: dict[ModelRef, ModelManifest] = {}
    for spec in pipeline_specs(request):
        for container in spec.containers:
            record = models.get(_ref(container))
            if record is None or record.artifact_uri is None or _ref(container) in manifests:
                continue
            try:
                manifests[_ref(container)] = read_manifest(store, record.artifact_uri)
            except CairnError:
                continue  # an unreadable package: the gateway's load reports it
    return manifests


def check_pipelines(
    request: DeploymentRequested, manifests: Mapping[ModelRef, ModelManifest]
) -> None:
    """Refuse a chain whose steps cannot run in process or do not connect, naming the step."""
    for spec in pipeline_specs(request):
        steps = [
            Step(number, _ref(container), manifests[_ref(container)])
            for number, container in enumerate(spec.containers, start=1)
            if _ref(container) in manifests
        ]
        if len(steps) != len(spec.containers):
            continue  # a step is not registered: resolving the variant refuses it by name
        check_chain(spec.variant_name, steps)


def check_chain(variant_name: str, steps: list[Step]) -> None:
    """Every step built in; step k's output names are step k+1's input names, in order."""
    for step in steps:
        if step.manifest.framework not in IN_PROCESS_FRAMEWORKS:
            raise PipelineStepUnsupported(
                f"variant {variant_name!r}: {step.label} is a {step.manifest.framework} package; "
                f"a pipeline runs in the gateway only with {sorted(IN_PROCESS_FRAMEWORKS)} steps",
                variant_name=variant_name,
                step=step.number,
            )
    for before, after in itertools.pairwise(steps):
        outputs = [column.name for column in before.manifest.signature.outputs]
        inputs = [column.name for column in after.manifest.signature.inputs]
        if outputs == inputs:
            continue
        why = (
            f"{len(outputs)} outputs for {len(inputs)} inputs"
            if len(outputs) != len(inputs)
            else "the names differ"
        )
        raise PipelineSignatureMismatch(
            f"variant {variant_name!r}: the outputs of {before.label} do not feed the inputs of "
            f"{after.label} ({why}: outputs {outputs}, inputs {inputs})",
            variant_name=variant_name,
            step=before.number,
            outputs=outputs,
            inputs=inputs,
        )
