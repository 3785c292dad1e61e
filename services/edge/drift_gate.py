"""The drift gate's measurements: the model's reference and the rows a stage's devices captured.

The reference is computed once per model version from the training data named in the model's
lineage (the `train` channel, else its first dataset) and kept at
`edge/baselines/<group>/<version>/reference.npz`; a plan asking for the drift gate is refused (422)
when there is none to read. The rows are the devices' uploaded captures (`EdgeCaptureRecord`
files, `edge/captures/<fleet>/<device>/yyyy/mm/dd/hh/`) answered by the plan's package since the
stage began. A capture file is named after the hour of its first record and a device that was
offline uploads late, so every hour from one before the stage began is listed again at each
check; a file already read for the stage is not read again.
"""

from __future__ import annotations

import gzip
import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from cairn.artifacts import LoadedModel, ModelManifest, read_manifest
from cairn.contracts.edge_events import EdgeCaptureRecord
from cairn.contracts.state import ModelVersionView, read_state, state_spec
from cairn.errors import CairnError, InvalidInput, ObjectNotFound
from cairn.store.base import ObjectStore
from pydantic import ValidationError

from services.edge.config import EdgeSettings
from services.edge.domain import DriftCheck, PackageDoc, Plan, Stage
from services.edge.drift import Reference, compare, record_rows, reference_of

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("cairn.edge.drift")
BASELINES = "edge/baselines"
CAPTURES = state_spec(EdgeCaptureRecord).prefix


class DriftGateRefused(InvalidInput):
    """The drift gate cannot be measured for this model (no readable training data)."""

    http_status = 422
    code = "drift_gate_refused"


@dataclass(frozen=True)
class Baseline:
    reference: Reference
    encoder: LoadedModel = field(repr=False)


@dataclass
class _StageRows:
    """The rows read so far for one running stage, by capture file."""

    stage: tuple[str, datetime | None]
    files: dict[str, tuple[str, npt.NDArray[np.float32]]] = field(default_factory=dict)


class DriftGate:
    def __init__(self, store: ObjectStore, settings: EdgeSettings) -> None:
        self.store = store
        self.settings = settings
        self._baselines: dict[tuple[str, int], Baseline] = {}
        self._rows: dict[str, _StageRows] = {}

    def baseline(self, group: str, version: int) -> Baseline:
        """The model version's reference: cached, stored, or computed from its training data."""
        cached = self._baselines.get((group, version))
        if cached is not None:
            return cached
        view = read_state(self.store, ModelVersionView, group, str(version))
        if view is None:
            raise DriftGateRefused(f"model {group}:{version} is not registered")
        try:
            manifest = read_manifest(self.store, view.artifact_uri)
        except CairnError as error:
            raise DriftGateRefused(f"the model's package cannot be read: {error.message}") from None
        encoder = LoadedModel(manifest)
        key = f"{BASELINES}/{group}/{version}/reference.npz"
        try:
            reference = Reference.from_bytes(self.store.get_bytes(key))
        except ObjectNotFound:
            reference = reference_of(
                training_matrix(self.store, manifest, encoder),
                manifest.signature.inputs,
                max_values=self.settings.drift_reference_max_values,
            )
            # Replicas racing here write the same bytes.
            self.store.put_bytes(key, reference.to_bytes(), content_type="application/x-npz")
        found = self._baselines[(group, version)] = Baseline(reference, encoder)
        return found

    def measure(self, plan: Plan, stage: Stage, package: PackageDoc, now: datetime) -> DriftCheck:
        """The stage's captured rows of the plan's package against the model's reference."""
        gate = plan.gate("drift")
        level = gate.threshold if gate is not None else 0.05
        try:
            baseline = self.baseline(package.model_package_group, package.model_version)
        except CairnError as error:
            return DriftCheck(checked_at=now, samples=0, threshold=level, problem=error.message)
        rows = self._stage_rows(plan, stage, baseline.encoder, now)
        matrices = [matrix for _, matrix in rows.files.values() if len(matrix)]
        devices = sorted({device for device, matrix in rows.files.values() if len(matrix)})
        current = np.vstack(matrices) if matrices else np.empty((0, baseline.encoder.n_inputs))
        samples = len(current)
        needed = gate.min_samples if gate is not None and gate.min_samples else 1
        if samples < needed:  # nothing to decide yet: the count is what the stage waits on
            return DriftCheck(checked_at=now, samples=samples, devices=devices, threshold=level)
        if samples > self.settings.drift_max_rows:  # a uniform sample bounds a check's cost
            chosen = np.random.default_rng(0).choice(samples, self.settings.drift_max_rows, False)
            current = current[np.sort(chosen)]
        threshold, features = compare(baseline.reference, current.astype(np.float32), level)
        return DriftCheck(
            checked_at=now, samples=samples, devices=devices, threshold=threshold, features=features
        )

    def keep_only(self, plans: set[str]) -> None:
        """Forget the rows read for plans that no longer run."""
        for name in [name for name in self._rows if name not in plans]:
            del self._rows[name]

    def _stage_rows(
        self, plan: Plan, stage: Stage, encoder: LoadedModel, now: datetime
    ) -> _StageRows:
        tag = (stage.name, stage.started_at)
        rows = self._rows.get(plan.plan_name)
        if rows is None or rows.stage != tag:
            rows = self._rows[plan.plan_name] = _StageRows(tag)
        since = stage.started_at or now
        for device in stage.assigned:
            for key in self._capture_keys(plan.fleet_name, device, since, now):
                if key in rows.files:
                    continue
                try:
                    data = self.store.get_bytes(key)
                except ObjectNotFound:
                    continue
                rows.files[key] = (device, _rows_of(data, plan.package_name, since, encoder))
        return rows

    def _capture_keys(self, fleet: str, device: str, since: datetime, now: datetime) -> list[str]:
        prefix = f"{CAPTURES}{fleet}/{device}/"
        hour = (since - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
        keys: list[str] = []
        while hour <= now:
            listed = self.store.list(f"{prefix}{hour:%Y/%m/%d/%H}/")
            keys.extend(info.key for info in listed if info.key.endswith(".jsonl"))
            hour += timedelta(hours=1)
        return keys


def _rows_of(
    data: bytes, package: str, since: datetime, encoder: LoadedModel
) -> npt.NDArray[np.float32]:
    """The rows of a capture file's records answered by `package` at or after `since`."""
    found: list[npt.NDArray[np.float32]] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = EdgeCaptureRecord.model_validate_json(line)
            if record.eventMetadata.get("package") != package:
                continue
            at = _time(record.eventMetadata.get("inferenceTime"))
            if at is None or at < since:
                continue
            found.append(record_rows(record, encoder))
        except (ValidationError, CairnError) as error:
            log.debug("skipping an unreadable capture record: %s", error)
    if not found:
        return np.empty((0, encoder.n_inputs), dtype=np.float32)
    return np.vstack(found)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def training_matrix(
    store: ObjectStore, manifest: ModelManifest, encoder: LoadedModel
) -> npt.NDArray[np.float32]:
    """The model's training data (from its lineage), encoded as the model takes it."""
    datasets = manifest.lineage.datasets
    train = next((d for d in datasets if d.channel == "train"), None) or (
        datasets[0] if datasets else None
    )
    if train is None:
        raise DriftGateRefused(
            "the drift gate compares with the model's training data, and the model's lineage "
            "names none; use the error-rate or latency gates"
        )
    from cairn.inference.tables import encode_table  # pyarrow: only when a reference is made

    keys = sorted(train.files) or _keys_at(store, train.uri)
    matrices = []
    for key in keys:
        table = _table(store, key)
        if table is None:
            continue
        try:
            matrices.append(encode_table(encoder, table, by_name=True))
        except InvalidInput as error:
            raise DriftGateRefused(f"training data {key}: {error.message}") from None
    if not matrices:
        raise DriftGateRefused(f"no training data (CSV, Parquet, JSON Lines) at {train.uri}")
    return np.vstack(matrices)


def _keys_at(store: ObjectStore, uri: str) -> list[str]:
    root = store.url.rstrip("/") + "/"
    key = (uri[len(root) :] if uri.startswith(root) else uri).strip("/")
    if "://" in key:
        return []
    if store.exists(key):
        return [key]
    return sorted(info.key for info in store.list(key + "/"))


def _table(store: ObjectStore, key: str) -> pa.Table | None:
    """One training file as an Arrow table, by its suffix; None for a file of another kind."""
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    if not key.endswith((".csv", ".csv.gz", ".parquet", ".pq", ".jsonl", ".json")):
        return None
    try:
        data = store.get_bytes(key)
        if key.endswith(".gz"):
            data = gzip.decompress(data)
        if key.endswith((".parquet", ".pq")):
            return pq.read_table(io.BytesIO(data))
        if key.endswith((".jsonl", ".json")):
            return pa_json.read_json(io.BytesIO(data))
        return pa_csv.read_csv(io.BytesIO(data))
    except ObjectNotFound:
        raise DriftGateRefused(f"the model's training data {key} is gone") from None
    except (OSError, ValueError) as error:  # Arrow's errors are both
        raise DriftGateRefused(f"training data {key} cannot be read: {error}") from None
