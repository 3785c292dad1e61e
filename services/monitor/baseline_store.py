"""Baselines per model version (`monitor/baselines/<group>/<version>/`) and drift detectors.

A baseline is `constraints.json`, `reference.npz` (the KS reference sample) and, written last to
mark it complete, `statistics.json`. `announced.json` is written once `BaselineComputed` went out.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from cairn.artifacts import ModelManifest, read_manifest
from cairn.errors import InvalidInput, ObjectNotFound, PreconditionFailed
from cairn.store.base import ObjectStore

from services.monitor.baseline import (
    Constraints,
    ReferenceSample,
    Statistics,
    compute_baseline,
    reference_sample,
)
from services.monitor.domain import BASELINES, Schedule
from services.monitor.drift import DriftDetector
from services.monitor.storage import read_table

log = logging.getLogger("cairn.monitor.baselines")

_JSON = "application/json"
REFERENCE = "reference.npz"
ANNOUNCED = "announced.json"


@dataclass(frozen=True)
class Baseline:
    """A model version's training-data statistics and constraints, and how to judge its output."""

    group: str
    version: int
    statistics: Statistics
    constraints: Constraints
    reference: ReferenceSample
    statistics_key: str
    constraints_key: str
    task: str
    class_labels: list[str] | None


def baseline_prefix(group: str, version: int) -> str:
    return f"{BASELINES}/{group}/{version}/"


class Baselines:
    """Computed once per model version (by whichever replica gets there first), then cached."""

    def __init__(self, store: ObjectStore, sketch_size: int, reference_max_values: int) -> None:
        self.store = store
        self.sketch_size = sketch_size
        self.reference_max_values = reference_max_values
        self._cache: dict[tuple[str, int], Baseline] = {}
        self._detectors: dict[tuple[str, int, float, str], DriftDetector] = {}
        self._announced: set[tuple[str, int]] = set()

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
            reference = self._stored_reference(group, version, manifest, statistics)
            created = False
        except ObjectNotFound:
            statistics, constraints, reference, created = self._store_new(group, version, manifest)
        baseline = Baseline(
            group,
            version,
            statistics,
            constraints,
            reference,
            prefix + "statistics.json",
            prefix + "constraints.json",
            manifest.task,
            manifest.class_labels,
        )
        self._cache[(group, version)] = baseline
        return baseline, created

    def announced(self, group: str, version: int) -> bool:
        """Whether `BaselineComputed` went out for this baseline (its marker is stored)."""
        if (group, version) not in self._announced:
            if not self.store.exists(baseline_prefix(group, version) + ANNOUNCED):
                return False
            self._announced.add((group, version))
        return True

    def mark_announced(self, group: str, version: int, event_id: str) -> None:
        """Written after the publish: a crash before it only means one more announcement."""
        marker = {"event_id": event_id, "announced_at": datetime.now(UTC).isoformat()}
        self.store.put_bytes(
            baseline_prefix(group, version) + ANNOUNCED,
            json.dumps(marker).encode(),
            content_type=_JSON,
        )
        self._announced.add((group, version))

    def _stored_reference(
        self, group: str, version: int, manifest: ModelManifest, statistics: Statistics
    ) -> ReferenceSample:
        """The stored reference sample; a baseline from before them gets one now (or, when its
        training data is gone, falls back to its quantile sketch)."""
        key = baseline_prefix(group, version) + REFERENCE
        try:
            return ReferenceSample.from_bytes(self.store.get_bytes(key))
        except ObjectNotFound:
            pass
        try:
            reference = reference_sample(
                self._training_frame(group, version, manifest),
                statistics,
                max_values=self.reference_max_values,
            )
        except (InvalidInput, ObjectNotFound):
            log.warning("no training data for %s v%s: KS on its quantile sketch", group, version)
            return ReferenceSample.from_statistics(statistics)
        self.store.put_bytes(key, reference.to_bytes(), content_type="application/octet-stream")
        return reference

    def _store_new(
        self, group: str, version: int, manifest: ModelManifest
    ) -> tuple[Statistics, Constraints, ReferenceSample, bool]:
        """Compute and store a baseline; False when another replica stored it first."""
        prefix = baseline_prefix(group, version)
        frame = self._training_frame(group, version, manifest)
        statistics, constraints = compute_baseline(
            frame,
            manifest.signature.inputs,
            group=group,
            version=version,
            label_column=manifest.label_column,
            sketch_size=self.sketch_size,
        )
        reference = reference_sample(frame, statistics, max_values=self.reference_max_values)
        # constraints and reference first, statistics last: statistics.json marks a complete
        # baseline. Replicas racing here write identical bytes.
        self.store.put_bytes(
            prefix + "constraints.json",
            constraints.model_dump_json(indent=1).encode(),
            content_type=_JSON,
        )
        self.store.put_bytes(
            prefix + REFERENCE, reference.to_bytes(), content_type="application/octet-stream"
        )
        try:
            self.store.put_bytes(
                prefix + "statistics.json",
                statistics.model_dump_json().encode(),
                content_type=_JSON,
                if_none_match=True,
            )
        except PreconditionFailed:  # another replica won; use its (identical) baseline
            return self.statistics(group, version), constraints, reference, False
        return statistics, constraints, reference, True

    def _training_frame(self, group: str, version: int, manifest: ModelManifest) -> pd.DataFrame:
        datasets = manifest.lineage.datasets
        train = next((d for d in datasets if d.channel == "train"), None) or (
            datasets[0] if datasets else None
        )
        if train is None:
            raise InvalidInput(f"model {group} v{version} has no training data in its lineage")
        return read_table(self.store, train.uri)

    def detector(self, baseline: Baseline, schedule: Schedule) -> DriftDetector:
        """One detector per baseline and test settings (building one reads the sketches)."""
        key = (baseline.group, baseline.version, schedule.drift_p_value, schedule.correction)
        found = self._detectors.get(key)
        if found is None:
            found = self._detectors[key] = DriftDetector(
                baseline.statistics,
                baseline.constraints,
                baseline.reference,
                p_value=schedule.drift_p_value,
                correction=schedule.correction,
            )
        return found
