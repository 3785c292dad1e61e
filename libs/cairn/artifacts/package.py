"""Write and load model packages: files first, `manifest.json` last, every sha256 verified on load.

Only safe formats are ever loaded: XGBoost's UBJSON model, scikit-learn estimators through
skops with an explicit list of trusted types, and the built-ins of `cairn.builtins` (safetensors
weights, JSON configs and trees). Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cairn.artifacts.manifest import MANIFEST_FILE, ModelManifest
from cairn.artifacts.signature import Cell, SignatureEncoder
from cairn.errors import CairnError, InvalidInput, ObjectNotFound
from cairn.store.base import ObjectStore, check_key

XGBOOST_MODEL_FILE = "model.ubj"
SKLEARN_MODEL_FILE = "model.skops"

# The scikit-learn types the built-in algorithms save; skops refuses anything else.
TRUSTED_SKLEARN_TYPES: tuple[str, ...] = (
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.linear_model._stochastic_gradient.SGDRegressor",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.cluster._kmeans.KMeans",
    "sklearn.decomposition._pca.PCA",
    "sklearn.decomposition._lda.LatentDirichletAllocation",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.neighbors._regression.KNeighborsRegressor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.ensemble._iforest.IsolationForest",
    "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
    "sklearn.utils._param_validation.Interval",
    "sklearn.linear_model._sgd_fast.Hinge",
    "sklearn.linear_model._sgd_fast.Log",
    "sklearn.linear_model._sgd_fast.SquaredLoss",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.Interval",
    "numpy.dtype",
)


class ArtifactChecksumMismatch(CairnError):
    """A package file's bytes do not hash to what its manifest says (tampered or corrupt)."""

    code = "artifact_checksum_mismatch"


class UnsupportedModelPackage(InvalidInput):
    """The package cannot be loaded for prediction (unknown framework, untrusted types, ...)."""

    code = "unsupported_model_package"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_prefix(uri: str, store: ObjectStore | None = None) -> str:
    """The store key prefix (ending in `/`) a package URI names; accepts the store's own URIs."""
    prefix = uri
    if store is not None:
        root = store.url.rstrip("/") + "/"
        if prefix.startswith(root):
            prefix = prefix[len(root) :]
    prefix = prefix.strip("/")
    if "://" in prefix:
        raise InvalidInput(f"model package URI {uri!r} is not in this platform's object store")
    check_key(prefix)
    return prefix + "/"


def write_model_package(
    store: ObjectStore,
    prefix: str,
    manifest: ModelManifest,
    files: Mapping[str, bytes | Path],
) -> str:
    """Store the files under `prefix`, then a manifest listing their sha256; returns the prefix.

    Args:
        store: the object store.
        prefix: key prefix of the package (`models/job-1/`); a deterministic prefix makes a
            re-run overwrite the same objects and nothing else.
        manifest: everything but `files`, which is filled in here.
        files: relative path -> bytes or a local file.
    """
    root = package_prefix(prefix)
    checksums: dict[str, str] = {}
    for relative, content in sorted(files.items()):
        if relative == MANIFEST_FILE:
            raise InvalidInput(f"{MANIFEST_FILE} is written by write_model_package itself")
        key = check_key(root + relative)
        if isinstance(content, Path):
            checksums[relative] = _file_sha256(content)
            store.put_file(key, content)
        else:
            checksums[relative] = sha256_hex(content)
            store.put_bytes(key, content)
    final = manifest.model_copy(update={"files": checksums})
    store.put_bytes(
        root + MANIFEST_FILE,
        final.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )
    return root


def read_manifest(store: ObjectStore, uri: str) -> ModelManifest:
    """The manifest of the package at `uri` (ObjectNotFound when there is none)."""
    raw = store.get_bytes(package_prefix(uri, store) + MANIFEST_FILE)
    return ModelManifest.model_validate_json(raw)


def load_model(store: ObjectStore, uri: str, *, nthread: int = 1) -> LoadedModel:
    """Download a package, verify every file's sha256 and load the model from a safe format.

    Args:
        store: the object store holding the package.
        uri: the package prefix (`models/job-1/`) or the store's URI of it.
        nthread: threads per predict call; 1 keeps single-row latency low under concurrency.

    Raises:
        ObjectNotFound: no package there.
        ArtifactChecksumMismatch: a file does not match the manifest.
        UnsupportedModelPackage: the framework cannot be served or holds untrusted types.
    """
    root = package_prefix(uri, store)
    manifest = read_manifest(store, root)
    blobs = dict(_verified_files(store, root, manifest))
    if manifest.framework == "xgboost":
        return XGBoostModel(manifest, blobs, nthread=nthread)
    if manifest.framework == "sklearn":
        return SklearnModel(manifest, blobs)
    if manifest.framework in ("torch", "rrcf", "gensim"):
        from cairn.builtins import load_builtin

        return load_builtin(manifest, blobs)
    raise UnsupportedModelPackage(
        f"{manifest.framework} packages cannot be served (files: {sorted(manifest.files)})",
        framework=manifest.framework,
    )


def download_package(store: ObjectStore, uri: str, directory: Path) -> ModelManifest:
    """Write a package's files, each sha256 verified, under `directory`; nothing is loaded.

    For packages whose code runs in a process of its own (framework `script`): that process
    reads them from disk, SageMaker's `model_dir`.
    """
    root = package_prefix(uri, store)
    manifest = read_manifest(store, root)
    target = directory.resolve()
    for relative, data in _verified_files(store, root, manifest):
        path = (target / relative).resolve()
        if not path.is_relative_to(target):
            raise UnsupportedModelPackage(f"package {root} lists a file outside it: {relative}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return manifest


def _verified_files(
    store: ObjectStore, root: str, manifest: ModelManifest
) -> Iterator[tuple[str, bytes]]:
    for relative, expected in manifest.files.items():
        try:
            data = store.get_bytes(root + relative)
        except ObjectNotFound as error:
            raise ArtifactChecksumMismatch(
                f"package {root} lists {relative} but it is missing", file=relative
            ) from error
        actual = sha256_hex(data)
        if actual != expected:
            raise ArtifactChecksumMismatch(
                f"{root}{relative}: sha256 {actual} does not match the manifest's {expected}",
                file=relative,
                expected=expected,
                actual=actual,
            )
        yield relative, data


class LoadedModel:
    """A verified model ready to predict; `encode_*` turn request rows into its input matrix."""

    # The JSON key SageMaker's algorithm puts its answers under (None: a bare list).
    response_envelope: str | None = "predictions"

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        self._encoder = SignatureEncoder(manifest.signature.inputs)

    @property
    def n_inputs(self) -> int:
        return len(self.manifest.signature.inputs)

    @property
    def input_names(self) -> list[str]:
        return [column.name for column in self.manifest.signature.inputs]

    @property
    def output_names(self) -> list[str]:
        return [column.name for column in self.manifest.signature.outputs]

    def encode_rows(self, rows: Sequence[Sequence[Cell]]) -> npt.NDArray[np.float32]:
        return self._encoder.encode_rows(rows)

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
        return self._encoder.encode_records(records)

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """Binary: P(class 1); multiclass: per-class probabilities; regression: the value; ..."""
        raise NotImplementedError(f"{type(self).__name__} does not predict")

    def explain(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """Per-feature contributions and the bias as the last column (sums to the raw margin)."""
        raise NotImplementedError(
            f"{type(self).__name__} ({self.manifest.algorithm}) does not explain predictions"
        )

    def _check_width(self, matrix: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        array = np.asarray(matrix, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.n_inputs:
            from cairn.artifacts.signature import SignatureMismatch

            raise SignatureMismatch(
                f"input has shape {array.shape}; the model takes (n, {self.n_inputs})"
            )
        return array


class XGBoostModel(LoadedModel):
    """An XGBoost booster loaded from UBJSON; `inplace_predict` is thread-safe and cheap per row."""

    def __init__(self, manifest: ModelManifest, blobs: Mapping[str, bytes], nthread: int) -> None:
        import xgboost

        super().__init__(manifest)
        if XGBOOST_MODEL_FILE not in blobs:
            raise UnsupportedModelPackage(f"xgboost package has no {XGBOOST_MODEL_FILE}")
        self.booster = xgboost.Booster(model_file=bytearray(blobs[XGBOOST_MODEL_FILE]))
        self.booster.set_param({"nthread": nthread})
        self._feature_names = self.booster.feature_names
        self._feature_types = self.booster.feature_types
        self._explain_lock = threading.Lock()
        self._gpu_booster: Any = None
        self._gpu_lock = threading.Lock()  # one device: large batches take turns on it
        self.devices: tuple[str, ...] = ("cpu",)

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        result: npt.NDArray[Any] = self.booster.inplace_predict(self._check_width(matrix))
        return result

    def use_gpu(self, booster: Any = None) -> None:
        """Add a copy of the booster on the GPU for `predict_on(..., "cuda")`; `predict` stays
        on the CPU booster, so small requests pay no transfer to the device.

        Only call this where `cairn.gpu.gpu_status()` says a GPU is usable: elsewhere XGBoost
        falls back to the CPU with no more than a warning. `booster` stands in for the copy
        (tests, on machines without a GPU).
        """
        if booster is None:
            booster = self.booster.copy()
            booster.set_param({"device": "cuda"})
        self._gpu_booster = booster
        self.devices = ("cpu", "cuda")

    def predict_on(self, matrix: npt.NDArray[np.float32], device: str) -> npt.NDArray[Any]:
        """`predict` on the named device: "cpu", or "cuda" once `use_gpu` added that booster."""
        if device == "cpu":
            return self.predict(matrix)
        if device != "cuda" or self._gpu_booster is None:
            raise InvalidInput(f"this model predicts on {list(self.devices)}, not {device!r}")
        # The rows are in host memory: XGBoost copies a DMatrix to the device whole, and
        # inplace_predict with a GPU booster falls back to that (with a warning) anyway.
        import xgboost

        dmatrix = xgboost.DMatrix(
            self._check_width(matrix),
            feature_names=self._feature_names,
            feature_types=self._feature_types,
            enable_categorical=True,
        )
        with self._gpu_lock:
            result: npt.NDArray[Any] = self._gpu_booster.predict(dmatrix)
        return result

    def explain(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        import xgboost

        dmatrix = xgboost.DMatrix(
            self._check_width(matrix),
            feature_names=self._feature_names,
            feature_types=self._feature_types,
            enable_categorical=True,
        )
        contributions: npt.NDArray[Any] = self.booster.predict(dmatrix, pred_contribs=True)
        return contributions


class SklearnModel(LoadedModel):
    """A scikit-learn estimator loaded with skops, trusting only the types the built-ins use."""

    def __init__(self, manifest: ModelManifest, blobs: Mapping[str, bytes]) -> None:
        import skops.io

        super().__init__(manifest)
        if SKLEARN_MODEL_FILE not in blobs:
            raise UnsupportedModelPackage(f"sklearn package has no {SKLEARN_MODEL_FILE}")
        data = blobs[SKLEARN_MODEL_FILE]
        untrusted = set(skops.io.get_untrusted_types(data=data))
        refused = sorted(untrusted - set(TRUSTED_SKLEARN_TYPES))
        if refused:
            raise UnsupportedModelPackage(
                f"the package holds types Cairn does not trust: {refused}", types=refused
            )
        self.estimator: Any = skops.io.loads(data, trusted=sorted(untrusted))

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        features = self._check_width(matrix)
        task = self.manifest.task
        if task == "binary_classification":
            return np.asarray(self.estimator.predict_proba(features)[:, 1])
        if task == "multiclass_classification":
            return np.asarray(self.estimator.predict_proba(features))
        if task == "clustering":
            distances = np.asarray(self.estimator.transform(features))
            cluster = distances.argmin(axis=1)
            return np.column_stack([cluster, distances[np.arange(len(cluster)), cluster]])
        if task == "topic_model" and bool((features < 0).any()):
            raise InvalidInput("word counts cannot be negative")
        if task in ("dimensionality_reduction", "topic_model"):
            return np.asarray(self.estimator.transform(features))
        if task == "anomaly_detection":
            # score_samples is high for normal points; negate so higher means more anomalous.
            return -np.asarray(self.estimator.score_samples(features))
        return np.asarray(self.estimator.predict(features))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
