"""Neo's job: compile or export a registered model for a device target, and prove it still answers.

- treelite: XGBoost models through treelite + tl2cgen into a shared library built by a C compiler
  for the target (`gcc` on the same architecture, `aarch64-linux-gnu-gcc` for linux-aarch64);
- onnx: XGBoost through onnxmltools, scikit-learn through skl2onnx, run by ONNX Runtime;
- native: the model file as the registry stores it (the device needs xgboost / skops).

A package is usable only when its answers on held-out rows (the model's validation data from its
lineage, else rows drawn from the signature) match the original within `tolerance`.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.artifacts import LoadedModel, load_model
from cairn.artifacts.package import SKLEARN_MODEL_FILE, XGBOOST_MODEL_FILE
from cairn.errors import CairnError, InvalidInput, ObjectNotFound
from cairn.store.base import ObjectStore
from cairn_edge.models import OnnxModel, TreeliteModel
from cairn_edge.package import MODEL_MANIFEST_FILE, SELFTEST_FILE, FileEntry, sha256_file

HOST_TARGETS = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch64", "arm64": "linux-aarch64"}
CROSS_COMPILERS = {"linux-aarch64": "aarch64-linux-gnu-gcc", "linux-x86_64": "x86_64-linux-gnu-gcc"}
MODEL_FILES = {"treelite": "model.so", "onnx": "model.onnx"}
CHECK_ROWS = 256
SELFTEST_ROWS = 16
LATENCY_CALLS = 300


class PackagingRefused(InvalidInput):
    """The model cannot be packaged as asked (format, target, compiler, accuracy)."""

    http_status = 422
    code = "packaging_refused"


@dataclass(frozen=True)
class Built:
    folder: Path
    model_file: str
    framework: str
    files: dict[str, FileEntry]
    max_abs_error: float
    latency_us: float
    original_latency_us: float
    rows_source: str

    @property
    def size_bytes(self) -> int:
        return sum(entry.size_bytes for entry in self.files.values())


def default_format(framework: str) -> str:
    return "treelite" if framework == "xgboost" else "onnx"


def compiler_for(target: str) -> str | None:
    """The C compiler that builds for `target` here, or None."""
    host = HOST_TARGETS.get(platform.machine())
    if target == host:
        return shutil.which("gcc") or shutil.which("cc")
    return shutil.which(CROSS_COMPILERS.get(target, ""))


def check_request(framework: str, fmt: str, target: str) -> None:
    """Refuse what cannot work before any work starts (422 with the reason)."""
    if fmt == "treelite":
        if framework != "xgboost":
            raise PackagingRefused(f"treelite compiles tree ensembles; this is a {framework} model")
        if compiler_for(target) is None:
            raise PackagingRefused(
                f"no C compiler for {target} here (need {CROSS_COMPILERS.get(target, 'gcc')}); "
                "use --format onnx",
                target=target,
            )
    if fmt == "onnx" and framework not in ("xgboost", "sklearn"):
        raise PackagingRefused(f"no ONNX exporter for {framework} models")
    host = HOST_TARGETS.get(platform.machine())
    if fmt != "treelite" and target not in HOST_TARGETS.values():
        raise PackagingRefused(f"unknown target {target!r}")
    if fmt == "native" and target != host:
        raise PackagingRefused(f"a native package is checked here, on {host}; target {target}")


def build(
    store: ObjectStore, artifact_uri: str, fmt: str, target: str, tolerance: float, workdir: Path
) -> Built:
    """Compile / export, check the answers on held-out rows, measure latency; files in `workdir`."""
    source = load_model(store, artifact_uri)
    framework = source.manifest.framework
    check_request(framework, fmt, target)
    rows, rows_source = held_out_rows(store, source)
    workdir.mkdir(parents=True, exist_ok=True)
    model_file = MODEL_FILES.get(fmt) or (
        XGBOOST_MODEL_FILE if framework == "xgboost" else SKLEARN_MODEL_FILE
    )
    path = workdir / model_file
    packaged: LoadedModel
    if fmt == "treelite":
        _compile_treelite(source, path, target)
        packaged = TreeliteModel(source.manifest, path)
    elif fmt == "onnx":
        path.write_bytes(_export_onnx(source))
        packaged = OnnxModel(source.manifest, path)
    else:
        path.write_bytes(store.get_bytes(artifact_uri.rstrip("/") + "/" + model_file))
        packaged = source
    expected = np.asarray(source.predict(rows), dtype=np.float64)
    actual = np.asarray(packaged.predict(rows), dtype=np.float64)
    if actual.shape != expected.shape:
        raise PackagingRefused(f"the package answers {actual.shape}; the model {expected.shape}")
    worst = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    if not worst <= tolerance:
        raise PackagingRefused(
            f"the package's answers differ from the original by up to {worst:.3g} on "
            f"{len(rows)} held-out rows (tolerance {tolerance:g})",
            max_abs_error=worst,
        )
    (workdir / MODEL_MANIFEST_FILE).write_text(source.manifest.model_dump_json())
    selftest = {
        "rows": rows[:SELFTEST_ROWS].tolist(),
        "expected": expected[:SELFTEST_ROWS].tolist(),
    }
    (workdir / SELFTEST_FILE).write_text(json.dumps(selftest))
    files = {
        f.name: FileEntry(sha256=sha256_file(f), size_bytes=f.stat().st_size)
        for f in sorted(workdir.iterdir())
        if f.is_file()
    }
    return Built(
        folder=workdir,
        model_file=model_file,
        framework=framework,
        files=files,
        max_abs_error=worst,
        latency_us=single_row_latency_us(packaged, rows),
        original_latency_us=single_row_latency_us(source, rows),
        rows_source=rows_source,
    )


def held_out_rows(store: ObjectStore, model: LoadedModel) -> tuple[npt.NDArray[np.float32], str]:
    """The validation rows named in the model's lineage, else rows drawn from its signature."""
    datasets = sorted(
        model.manifest.lineage.datasets, key=lambda d: (d.channel != "validation", d.channel)
    )
    for dataset in datasets:
        keys = sorted(dataset.files) or [dataset.uri]
        for key in keys:
            if not key.endswith(".csv"):
                continue
            try:
                text = store.get_bytes(key).decode()
                records = list(csv.DictReader(io.StringIO(text)))[:CHECK_ROWS]
                return model.encode_records(records), f"{dataset.channel}:{key}"
            except (CairnError, ObjectNotFound, UnicodeDecodeError, ValueError):
                continue
    rng = np.random.default_rng(7)
    columns = []
    for column in model.manifest.signature.inputs:
        if column.dtype == "category":
            count = max(len(column.categories or []), 1)
            columns.append(rng.integers(0, count, CHECK_ROWS).astype(np.float32))
        else:
            columns.append(rng.normal(0, 1, CHECK_ROWS).astype(np.float32))
    return np.column_stack(columns).astype(np.float32), "synthetic"


def single_row_latency_us(model: LoadedModel, rows: npt.NDArray[np.float32]) -> float:
    """Median time of one single-row predict call, in microseconds."""
    singles = [rows[i : i + 1] for i in range(min(len(rows), 32))]
    for row in singles:
        model.predict(row)
    timings = []
    for index in range(LATENCY_CALLS):
        row = singles[index % len(singles)]
        started = time.perf_counter()
        model.predict(row)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def _compile_treelite(source: LoadedModel, path: Path, target: str) -> None:
    import tl2cgen
    import treelite

    booster: Any = source.booster  # type: ignore[attr-defined]
    model = treelite.frontend.from_xgboost(booster)
    compiler = compiler_for(target)
    if compiler is None:
        raise PackagingRefused(f"no C compiler for {target}")
    tl2cgen.export_lib(
        model,
        toolchain=compiler,
        libpath=str(path),
        params={"parallel_comp": 1},
        nthread=1,
        verbose=False,
    )


def _export_onnx(source: LoadedModel) -> bytes:
    width = source.n_inputs
    if source.manifest.framework == "xgboost":
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        booster: Any = source.booster  # type: ignore[attr-defined]
        onnx_model = onnxmltools.convert_xgboost(
            booster, initial_types=[("input", FloatTensorType([None, width]))]
        )
    else:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType as SklFloat

        estimator: Any = source.estimator  # type: ignore[attr-defined]
        final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
        onnx_model = convert_sklearn(
            estimator, initial_types=[("input", SklFloat([None, width]))], options=options
        )
    return bytes(onnx_model.SerializeToString())
