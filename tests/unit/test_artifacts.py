"""Model packages: round trip, checksum verification, safe loading and signature encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xgboost
from cairn.artifacts import (
    ArtifactChecksumMismatch,
    InputColumn,
    Lineage,
    ModelManifest,
    Signature,
    SignatureMismatch,
    UnsupportedModelPackage,
    load_model,
    read_manifest,
    write_model_package,
)
from cairn.errors import InvalidInput
from cairn.store import InMemoryObjectStore

from services.trainer.algorithms import ALGORITHMS, TrainingContext
from services.trainer.features import prepare
from tests.support.trainer_data import FEATURES, credit_frame


@pytest.fixture(scope="module")
def credit_package() -> tuple[InMemoryObjectStore, str, object, object]:
    """An XGBoost credit model written to a store: (store, uri, booster, frame)."""
    frame = credit_frame(1500, seed=1)
    algorithm = ALGORITHMS["xgboost"]
    hp = algorithm.parse({"num_round": 20, "max_depth": 3})
    data = prepare(frame[:1200], frame[1200:], label_column="default", mode="classes")
    trained = algorithm.train(data, hp, TrainingContext())
    manifest = ModelManifest(
        framework=trained.framework,
        framework_version=trained.framework_version,
        algorithm="xgboost",
        task=trained.task,
        signature=Signature(inputs=data.inputs, outputs=trained.outputs),
        metrics=trained.metrics,
        lineage=Lineage(algorithm="xgboost", training_job="job-1"),
    )
    store = InMemoryObjectStore()
    uri = write_model_package(store, "models/job-1", manifest, trained.files)
    return store, uri, trained.model, frame


def test_loaded_xgboost_model_predicts_what_the_trained_booster_predicts(credit_package) -> None:
    store, uri, booster, frame = credit_package
    model = load_model(store, uri)
    rows = frame[list(FEATURES)].head(50)
    matrix = model.encode_records(rows.to_dict(orient="records"))
    expected = booster.predict(
        xgboost.DMatrix(
            matrix,
            feature_names=list(FEATURES),
            feature_types=["q", "q", "q", "q", "q", "c", "c"],
            enable_categorical=True,
        )
    )
    np.testing.assert_allclose(model.predict(matrix), expected, rtol=1e-6)
    assert uri == "models/job-1/"
    assert model.n_inputs == len(FEATURES)
    assert model.output_names == ["probability"]
    assert set(read_manifest(store, uri).files) == {"model.ubj"}


def test_explanations_sum_to_the_margin(credit_package) -> None:
    store, uri, _, frame = credit_package
    model = load_model(store, store.url.rstrip("/") + "/" + uri)  # the store URI works too
    matrix = model.encode_rows(frame[list(FEATURES)].head(5).values.tolist())
    contributions = model.explain(matrix)
    assert contributions.shape == (5, len(FEATURES) + 1)
    margin = np.log(model.predict(matrix) / (1 - model.predict(matrix)))
    np.testing.assert_allclose(contributions.sum(axis=1), margin, rtol=1e-4, atol=1e-4)


def test_a_tampered_file_is_refused(credit_package) -> None:
    store, uri, _, _ = credit_package
    copy = InMemoryObjectStore()
    for info in store.list(uri):
        copy.put_bytes(info.key, store.get_bytes(info.key))
    raw = bytearray(copy.get_bytes(uri + "model.ubj"))
    raw[-10] ^= 0xFF
    copy.put_bytes(uri + "model.ubj", bytes(raw))
    with pytest.raises(ArtifactChecksumMismatch, match=r"model\.ubj"):
        load_model(copy, uri)


def test_signature_errors_name_the_row_and_column(credit_package) -> None:
    store, uri, _, _ = credit_package
    model = load_model(store, uri)
    good = [40, 50000.0, 0.3, 1, 4, "car", "own"]
    with pytest.raises(SignatureMismatch, match="row 1 has 6 values"):
        model.encode_rows([good, good[:6]])
    with pytest.raises(SignatureMismatch, match=r"row 0, column 1 \('income'\)"):
        model.encode_rows([[40, "lots", 0.3, 1, 4, "car", "own"]])
    with pytest.raises(SignatureMismatch, match="missing columns \\['housing'\\]"):
        model.encode_records([dict(zip(FEATURES[:-1], good[:-1], strict=True))])
    assert issubclass(SignatureMismatch, InvalidInput)


def test_unseen_categories_and_blanks_become_missing_values() -> None:
    from cairn.artifacts import SignatureEncoder

    encoder = SignatureEncoder(
        [
            InputColumn(name="x", dtype="float"),
            InputColumn(name="colour", dtype="category", categories=["blue", "red"]),
        ]
    )
    matrix = encoder.encode_rows([["1.5", "red"], ["", "green"], [None, "blue"]])
    assert matrix.dtype == np.float32
    assert matrix[0].tolist() == [1.5, 1.0]
    assert math.isnan(matrix[1, 0]) and math.isnan(matrix[1, 1])
    assert math.isnan(matrix[2, 0]) and matrix[2, 1] == 0.0


def test_script_packages_are_not_servable() -> None:
    store = InMemoryObjectStore()
    manifest = ModelManifest(
        framework="script",
        framework_version="python3.11",
        algorithm="script",
        task="custom",
        signature=Signature(),
        lineage=Lineage(algorithm="script"),
    )
    uri = write_model_package(store, "models/s", manifest, {"weights.bin": b"123"})
    with pytest.raises(UnsupportedModelPackage, match="script"):
        load_model(store, uri)


def test_a_skops_file_with_untrusted_types_is_refused() -> None:
    import os

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    # A function reference is how a skops file smuggles in code to call on load or predict.
    estimator = FunctionTransformer(func=os.getpid)
    manifest = ModelManifest(
        framework="sklearn",
        framework_version="1",
        algorithm="rf",
        task="binary_classification",
        signature=Signature(inputs=[InputColumn(name="x", dtype="float")]),
        lineage=Lineage(algorithm="rf"),
    )
    store = InMemoryObjectStore()
    uri = write_model_package(
        store, "models/rf", manifest, {"model.skops": skops.io.dumps(estimator)}
    )
    with pytest.raises(UnsupportedModelPackage, match=r"posix\.getpid"):
        load_model(store, uri)
