"""Baselines per model version (`monitor/baselines/<group>/<version>/`) and drift detectors."""

from __future__ import annotations

from dataclasses import dataclass

from cairn.artifacts import ModelManifest, read_manifest
from cairn.errors import InvalidInput, ObjectNotFound, PreconditionFailed
from cairn.store.base import ObjectStore

from services.monitor.baseline import Constraints, Statistics, compute_baseline
from services.monitor.checks import DriftDetector
from services.monitor.domain import BASELINES, Schedule
from services.monitor.storage import read_table

_JSON = "application/json"


@dataclass(frozen=True)
class Baseline:
    """A model version's training-data statistics and constraints, and how to judge its output."""

    group: str
    version: int
    statistics: Statistics
    constraints: Constraints
    statistics_key: str
    constraints_key: str
    task: str
    class_labels: list[str] | None


def baseline_prefix(group: str, version: int) -> str:
    return f"{BASELINES}/{group}/{version}/"


class Baselines:
    """Computed once per model version (by whichever replica gets there first), then cached."""

    def __init__(self, store: ObjectStore, sketch_size: int) -> None:
        self.store = store
        self.sketch_size = sketch_size
        self._cache: dict[tuple[str, int], Baseline] = {}
        self._detectors: dict[tuple[str, int, float, str], DriftDetector] = {}

    def statistics(self, group: str, version: int) -> Statistics:
        """The stored statistics of a version (ObjectNotFound when it has no baseline yet)."""
        raw = self.store.get_bytes(baseline_prefix(group, version) + "statistics.json")
        return Statistics.model_validate_json(raw)

    def ensure(self, group: str, version: int, artifact_uri: str) -> tuple[Baseline, bool]:
        """The version's baseline, computed from its training data if it is not stored yet."""
        cached = self._cache.get((group, version))
        if cached is not None:
            return cached, False
        prefix = baseline_prefix(group, version)
        manifest = read_manifest(self.store, artifact_uri)
        try:
            statistics = self.statistics(group, version)
            constraints = Constraints.model_validate_json(
                self.store.get_bytes(prefix + "constraints.json")
            )
            created = False
        except ObjectNotFound:
            statistics, constraints, created = self._store_new(group, version, manifest)
        baseline = Baseline(
            group,
            version,
            statistics,
            constraints,
            prefix + "statistics.json",
            prefix + "constraints.json",
            manifest.task,
            manifest.class_labels,
        )
        self._cache[(group, version)] = baseline
        return baseline, created

    def _store_new(
        self, group: str, version: int, manifest: ModelManifest
    ) -> tuple[Statistics, Constraints, bool]:
        """Compute and store a baseline; False when another replica stored it first."""
        prefix = baseline_prefix(group, version)
        statistics, constraints = self._compute(group, version, manifest)
        # constraints first, statistics last: statistics.json marks a complete baseline.
        self.store.put_bytes(
            prefix + "constraints.json",
            constraints.model_dump_json(indent=1).encode(),
            content_type=_JSON,
        )
        try:
            self.store.put_bytes(
                prefix + "statistics.json",
                statistics.model_dump_json().encode(),
                content_type=_JSON,
                if_none_match=True,
            )
        except PreconditionFailed:  # another replica won; use its (identical) baseline
            return self.statistics(group, version), constraints, False
        return statistics, constraints, True

    def _compute(
        self, group: str, version: int, manifest: ModelManifest
    ) -> tuple[Statistics, Constraints]:
        datasets = manifest.lineage.datasets
        train = next((d for d in datasets if d.channel == "train"), None) or (
            datasets[0] if datasets else None
        )
        if train is None:
            raise InvalidInput(f"model {group} v{version} has no training data in its lineage")
        return compute_baseline(
            read_table(self.store, train.uri),
            manifest.signature.inputs,
            group=group,
            version=version,
            label_column=manifest.label_column,
            sketch_size=self.sketch_size,
        )

    def detector(self, baseline: Baseline, schedule: Schedule) -> DriftDetector:
        """One detector per baseline and test settings (building one reads the sketches)."""
        key = (baseline.group, baseline.version, schedule.drift_p_value, schedule.correction)
        found = self._detectors.get(key)
        if found is None:
            found = self._detectors[key] = DriftDetector(
                baseline.statistics,
                baseline.constraints,
                p_value=schedule.drift_p_value,
                correction=schedule.correction,
                sketch_size=self.sketch_size,
            )
        return found
