"""Load a verified edge package as a `LoadedModel`, so the gateway's payload code serves it.

- treelite: the shared library tl2cgen compiled, called through ctypes (no treelite or tl2cgen on
  the device); `predict(union Entry*, int pred_margin, float* out)` once per row.
- onnx: ONNX Runtime (imported only for ONNX packages).
- native: the source model file, through `cairn.artifacts` (needs xgboost / skops on the device).
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.artifacts.manifest import ModelManifest
from cairn.artifacts.package import LoadedModel

from cairn_edge.package import MODEL_MANIFEST_FILE, SELFTEST_FILE, EdgeManifest, PackageRefused

_MISSING = -1  # tl2cgen's `union Entry`: .missing == -1 marks a missing feature


class TreeliteModel(LoadedModel):
    """A tree ensemble compiled to native code by tl2cgen, one ctypes call per row."""

    def __init__(self, manifest: ModelManifest, library: Path) -> None:
        super().__init__(manifest)
        self._lib = ctypes.CDLL(str(library.resolve()))
        self._lib.get_num_feature.restype = ctypes.c_int32
        self._lib.get_num_target.restype = ctypes.c_int32
        self._lib.get_leaf_output_type.restype = ctypes.c_char_p
        self._lib.predict.restype = None
        self._lib.predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self.n_features = int(self._lib.get_num_feature())
        targets = int(self._lib.get_num_target())
        classes = (ctypes.c_int32 * targets)()
        self._lib.get_num_class(classes)
        self.width = targets * max(classes)
        leaf_type = (self._lib.get_leaf_output_type() or b"float32").decode()
        self.dtype: type[np.floating[Any]] = np.float64 if leaf_type == "float64" else np.float32
        if self.n_features != self.n_inputs:
            raise PackageRefused(
                f"the library takes {self.n_features} features; the signature has {self.n_inputs}"
            )

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        rows = np.ascontiguousarray(self._check_width(matrix), dtype=np.float32).copy()
        rows.view(np.int32)[np.isnan(rows)] = _MISSING
        out = np.zeros((len(rows), self.width), dtype=self.dtype)
        predict = self._lib.predict
        row_bytes, out_bytes = rows.strides[0], out.strides[0]
        row_base, out_base = rows.ctypes.data, out.ctypes.data
        for index in range(len(rows)):
            predict(row_base + index * row_bytes, 0, out_base + index * out_bytes)
        return out[:, 0] if self.width == 1 else out


class OnnxModel(LoadedModel):
    """An ONNX graph in ONNX Runtime; classifiers answer like the source model (P(class 1))."""

    def __init__(self, manifest: ModelManifest, path: Path) -> None:
        import onnxruntime

        super().__init__(manifest)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name
        outputs = [output.name for output in self.session.get_outputs()]
        classifier = manifest.task in ("binary_classification", "multiclass_classification")
        self._output = outputs[-1] if classifier else outputs[0]

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        features = np.ascontiguousarray(self._check_width(matrix), dtype=np.float32)
        result = np.asarray(self.session.run([self._output], {self._input: features})[0])
        if self.manifest.task == "binary_classification" and result.ndim == 2:
            return result[:, 1] if result.shape[1] == 2 else result[:, 0]
        if result.ndim == 2 and result.shape[1] == 1:
            return result[:, 0]
        return result


def load_package(folder: Path, manifest: EdgeManifest) -> LoadedModel:
    """The package's model, ready to predict (the files were verified before this is called)."""
    model_manifest = ModelManifest.model_validate_json((folder / MODEL_MANIFEST_FILE).read_bytes())
    model_path = folder / manifest.model_file
    if manifest.format == "treelite":
        return TreeliteModel(model_manifest, model_path)
    if manifest.format == "onnx":
        return OnnxModel(model_manifest, model_path)
    from cairn.artifacts.package import SklearnModel, XGBoostModel

    blobs = {manifest.model_file: model_path.read_bytes()}
    if model_manifest.framework == "xgboost":
        return XGBoostModel(model_manifest, blobs, nthread=1)
    return SklearnModel(model_manifest, blobs)


def self_test(folder: Path, model: LoadedModel, tolerance: float) -> None:
    """Answer the held-out rows as the original model did, within the package's tolerance."""
    test = json.loads((folder / SELFTEST_FILE).read_text())
    rows = np.asarray(test["rows"], dtype=np.float32)
    expected = np.asarray(test["expected"], dtype=np.float64)
    actual = np.asarray(model.predict(rows), dtype=np.float64)
    if actual.shape != expected.shape:
        raise PackageRefused(
            f"self-test: answers of shape {actual.shape}, {expected.shape} expected"
        )
    worst = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    if not worst <= tolerance:
        raise PackageRefused(
            f"self-test: answers differ from the original by {worst:.3g} > {tolerance:g}",
            "self_test_failed",
        )
