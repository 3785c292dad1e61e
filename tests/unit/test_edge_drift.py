"""The drift gate's measurements: a stage's captured rows against the model's training data.

Real statistics (scipy's KS and chi-squared) on planted drift and on none; the reference computed
from the training CSV named in a real model's lineage; captures read from the store's layout,
only the plan's package and only since the stage began."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import xgboost
from cairn.artifacts import (
    MANIFEST_FILE,
    DatasetLineage,
    InputColumn,
    Lineage,
    LoadedModel,
    ModelManifest,
    OutputColumn,
    Signature,
    read_manifest,
    write_model_package,
)
from cairn.contracts.edge_events import EdgeCaptureRecord
from cairn.contracts.state import ModelVersionView, state_spec, write_state
from cairn.store import InMemoryObjectStore, ObjectStore

from services.edge.config import EdgeSettings
from services.edge.domain import PackageDoc, Plan, parse_gate, parse_stage
from services.edge.drift import Reference, compare, record_rows, reference_of
from services.edge.drift_gate import DriftGate, DriftGateRefused, training_matrix

COLOURS = ["red", "green", "blue"]
INPUTS = [
    InputColumn(name="age", dtype="float"),
    InputColumn(name="income", dtype="float"),
    InputColumn(name="colour", dtype="category", categories=COLOURS),
]
T0 = datetime(2026, 11, 1, 10, 30, tzinfo=UTC)


def rows_like_training(count: int, seed: int, age_shift: float = 0.0) -> list[list[Any]]:
    """Rows as a request holds them: age, income, colour."""
    rng = np.random.default_rng(seed)
    ages = rng.normal(40 + age_shift, 10, count).round(2)
    incomes = rng.normal(50, 15, count).round(2)
    colours = rng.choice(COLOURS, count, p=[0.5, 0.3, 0.2])
    return [[a, i, c] for a, i, c in zip(ages.tolist(), incomes.tolist(), colours, strict=True)]


def make_trained_model(store: ObjectStore, group: str, rows: int = 400) -> str:
    """A registered XGBoost model whose lineage names its training CSV (with a label column)."""
    training = rows_like_training(rows, seed=0)
    labels = [int(age > 40) for age, _, _ in training]
    text = "age,income,colour,label\n" + "".join(
        f"{a},{i},{c},{y}\n" for (a, i, c), y in zip(training, labels, strict=True)
    )
    key = f"data/{group}/train/part-0.csv"
    store.put_bytes(key, text.encode())
    digest = hashlib.sha256(text.encode()).hexdigest()
    manifest = ModelManifest(
        framework="xgboost",
        framework_version=xgboost.__version__,
        algorithm="xgboost",
        task="binary_classification",
        signature=Signature(inputs=INPUTS, outputs=[OutputColumn(name="probability")]),
        label_column="label",
        lineage=Lineage(
            algorithm="xgboost",
            datasets=[
                DatasetLineage(
                    channel="train", uri=f"data/{group}/train/", sha256=digest, files={key: digest}
                )
            ],
        ),
    )
    matrix = LoadedModel(manifest).encode_rows(training)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2}, xgboost.DMatrix(matrix, label=labels), 8
    )
    uri = write_model_package(
        store, f"models/{group}/1/", manifest, {"model.ubj": booster.save_raw("ubj")}
    )
    view = ModelVersionView(
        model_package_group=group, version=1, artifact_uri=uri, approval_status="Approved"
    )
    write_state(store, view, group, "1")
    return uri


def capture_line(rows: list[list[Any]], package: str, at: datetime, kind: str = "csv") -> str:
    if kind == "csv":
        data, content_type = "\n".join(",".join(map(str, row)) for row in rows), "text/csv"
    elif kind == "records":
        names = [column.name for column in INPUTS]
        data = json.dumps({"instances": [dict(zip(names, row, strict=True)) for row in rows]})
        content_type = "application/json"
    else:  # Open Inference Protocol v2, categories as their codes
        codes = [[a, i, COLOURS.index(c)] for a, i, c in rows]
        tensor = {"name": "x", "shape": [len(rows), 3], "datatype": "FP32", "data": codes}
        data, content_type = json.dumps({"inputs": [tensor]}), "application/json"
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {"observedContentType": content_type, "data": data},
                "endpointOutput": {"observedContentType": "text/csv", "data": "0.5"},
            },
            "eventMetadata": {"package": package, "inferenceTime": at.isoformat()},
        }
    )


@pytest.fixture
def store() -> ObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
def encoder(store: ObjectStore) -> LoadedModel:
    return LoadedModel(read_manifest(store, make_trained_model(store, "credit")))


def reference(store: ObjectStore, encoder: LoadedModel) -> Reference:
    return reference_of(training_matrix(store, encoder.manifest, encoder), INPUTS, max_values=1000)


def test_rows_from_the_training_distribution_do_not_drift(
    store: ObjectStore, encoder: LoadedModel
) -> None:
    current = encoder.encode_rows(rows_like_training(300, seed=1))
    threshold, features = compare(reference(store, encoder), current, 0.05)
    assert threshold == pytest.approx(0.05 / 3)  # Bonferroni over the three inputs
    assert [(f.feature, f.test) for f in features] == [
        ("age", "ks"),
        ("income", "ks"),
        ("colour", "chi2"),
    ]
    assert not [f.feature for f in features if f.drifted], features


def test_planted_drift_is_found_in_the_inputs_that_moved(
    store: ObjectStore, encoder: LoadedModel
) -> None:
    rows = rows_like_training(300, seed=2, age_shift=8.0)
    for row in rows[:150]:
        row[2] = "blue"  # a category far more common than in training
    _, features = compare(reference(store, encoder), encoder.encode_rows(rows), 0.05)
    assert {f.feature for f in features if f.drifted} == {"age", "colour"}
    assert next(f for f in features if f.feature == "income").p_value > 0.05


def test_missing_cells_and_unseen_categories_are_not_drift(
    store: ObjectStore, encoder: LoadedModel
) -> None:
    rows = rows_like_training(300, seed=3)
    for row in rows[::3]:
        row[0], row[2] = None, "purple"
    _, features = compare(reference(store, encoder), encoder.encode_rows(rows), 0.05)
    assert not [f.feature for f in features if f.drifted]


def test_the_reference_keeps_quantiles_beyond_its_cap_and_survives_a_round_trip(
    store: ObjectStore, encoder: LoadedModel
) -> None:
    matrix = training_matrix(store, encoder.manifest, encoder)
    capped = reference_of(matrix, INPUTS, max_values=50)
    assert len(capped.values[0]) == 50 and capped.rows == 400
    assert capped.values[2].sum() == 400  # counts per colour code
    again = Reference.from_bytes(capped.to_bytes())
    assert again.names == capped.names and again.categorical == [False, False, True]
    np.testing.assert_array_equal(again.values[1], capped.values[1])


def test_captured_bodies_of_every_format_give_the_same_rows(encoder: LoadedModel) -> None:
    rows = rows_like_training(4, seed=4)
    matrices = [
        record_rows(EdgeCaptureRecord.model_validate_json(capture_line(rows, "p", T0, k)), encoder)
        for k in ("csv", "records", "oip")
    ]
    for matrix in matrices[1:]:
        np.testing.assert_allclose(matrix, matrices[0], rtol=1e-6)


def put_captures(store: ObjectStore, device: str, at: datetime, lines: list[str]) -> None:
    key = state_spec(EdgeCaptureRecord).key("shops", device, at, f"batch-{at:%H%M%S}")  # type: ignore[arg-type]
    store.put_bytes(key, ("\n".join(lines) + "\n").encode())


def drift_plan(gate: str = "drift:0.05:100") -> Plan:
    stage = parse_stage("wave=devices:d1,d2").model_copy(
        update={"status": "InProgress", "assigned": ["d1", "d2"], "started_at": T0}
    )
    return Plan(
        plan_name="spring",
        fleet_name="shops",
        package_name="credit-2",
        stages=[stage],
        gates=[parse_gate(gate)],
    )


def package() -> PackageDoc:
    return PackageDoc(
        package_name="credit-2",
        model_package_group="credit",
        model_version=1,
        target="linux-x86_64",
        format="native",
        tolerance=1e-4,
    )


def test_a_stage_is_measured_on_its_own_devices_rows_of_the_new_package_since_it_began(
    store: ObjectStore, encoder: LoadedModel
) -> None:
    gate = DriftGate(store, EdgeSettings())
    plan = drift_plan()
    soon, late = T0 + timedelta(seconds=5), T0 + timedelta(minutes=40)  # late: the next hour
    shifted = rows_like_training(60, seed=5, age_shift=30)
    put_captures(store, "d1", soon, [capture_line(shifted[:30], "credit-2", soon)])
    put_captures(store, "d2", late, [capture_line(shifted[30:], "credit-2", late, "oip")])
    # Not counted: the old package; the new one before the stage began; a device of no stage.
    before = T0 - timedelta(minutes=1)
    old = [capture_line(shifted, "credit-1", soon), capture_line(shifted, "credit-2", before)]
    put_captures(store, "d1", before, old)
    put_captures(store, "d3", late, [capture_line(shifted, "credit-2", late)])

    too_few = gate.measure(plan, plan.stages[0], package(), late)
    assert (too_few.samples, too_few.devices, too_few.features) == (60, ["d1", "d2"], [])
    assert store.exists("edge/baselines/credit/1/reference.npz")

    more = T0 + timedelta(minutes=50)
    put_captures(store, "d1", more, [capture_line(shifted, "credit-2", more, "records")])
    check = gate.measure(plan, plan.stages[0], package(), more)
    assert check.samples == 120
    assert "age" in {f.feature for f in check.drifted}


def test_a_model_without_training_data_cannot_have_the_drift_gate(store: ObjectStore) -> None:
    uri = make_trained_model(store, "bare")
    manifest = read_manifest(store, uri)
    bare = manifest.model_copy(update={"lineage": Lineage(algorithm="xgboost")})
    store.put_bytes(uri + MANIFEST_FILE, bare.model_dump_json().encode())
    with pytest.raises(DriftGateRefused, match="lineage names none"):
        DriftGate(store, EdgeSettings()).baseline("bare", 1)
    check = DriftGate(store, EdgeSettings()).measure(
        drift_plan(),
        drift_plan().stages[0],
        package().model_copy(update={"model_package_group": "bare"}),
        T0,
    )
    assert check.samples == 0 and "lineage names none" in (check.problem or "")
