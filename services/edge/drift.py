"""The drift gate's statistics: a stage's captured rows against the model's training data.

The same tests as the monitor's drift checks, per model input: two-sample Kolmogorov-Smirnov
(scipy's `ks_2samp`) for a numeric input, chi-squared on the category counts (scipy's
`chi2_contingency`, over the categories seen in either) for a categorical one, and Bonferroni
across the inputs tested. Missing cells and unseen categories are left out: they are a data
quality question, not drift. The reference keeps each numeric input's training values sorted (or,
beyond `max_values`, that many quantiles, whose distribution is within 1/max_values of the data's)
and each categorical input's count per category code, so a check never reads the training data.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from cairn.artifacts import InputColumn, LoadedModel
from cairn.contracts.edge_events import EdgeCaptureRecord
from cairn.errors import InvalidInput
from cairn.inference.payloads import CSV, JSON, media_type, parse_body

from services.edge.domain import FeatureDrift

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Reference:
    """Per model input: sorted training values (numeric) or training counts per category code."""

    names: list[str]
    categorical: list[bool]
    values: list[Floats]
    rows: int

    def to_bytes(self) -> bytes:
        """An `.npz` of plain arrays (read back without pickle)."""
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "names": np.array(self.names, dtype=np.str_),
            "categorical": np.array(self.categorical, dtype=np.bool_),
            "rows": np.array([self.rows], dtype=np.int64),
        }
        arrays |= {f"values_{index}": values for index, values in enumerate(self.values)}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Reference:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            names = [str(name) for name in archive["names"]]
            return cls(
                names=names,
                categorical=[bool(flag) for flag in archive["categorical"]],
                values=[archive[f"values_{i}"].astype(np.float64) for i in range(len(names))],
                rows=int(archive["rows"][0]),
            )


def reference_of(
    matrix: npt.NDArray[np.float32], inputs: Sequence[InputColumn], *, max_values: int
) -> Reference:
    """The reference of an encoded training matrix (category codes, NaN where missing)."""
    values: list[Floats] = []
    for index, column in enumerate(inputs):
        present = _present(matrix[:, index])
        if column.dtype == "category":
            width = max(len(column.categories or []), 1)
            values.append(np.bincount(present.astype(np.int64), minlength=width).astype(float))
            continue
        ordered = np.sort(present)
        if len(ordered) > max_values:
            ordered = np.quantile(ordered, np.linspace(0.0, 1.0, max_values))
        values.append(ordered)
    return Reference(
        names=[column.name for column in inputs],
        categorical=[column.dtype == "category" for column in inputs],
        values=values,
        rows=len(matrix),
    )


def compare(
    reference: Reference, current: npt.NDArray[np.float32], p_value: float
) -> tuple[float, list[FeatureDrift]]:
    """Each input's test against the reference; the Bonferroni level and the results.

    An input with no values on either side is not tested (and does not count for Bonferroni).
    """
    from scipy.stats import ks_2samp  # scipy.stats takes seconds to import: only when needed

    tested: list[tuple[str, Literal["ks", "chi2"], float, float]] = []
    for index, name in enumerate(reference.names):
        rows, known = _present(current[:, index]), reference.values[index]
        categorical = reference.categorical[index]
        if len(rows) == 0 or (known.sum() == 0 if categorical else len(known) == 0):
            continue
        if categorical:
            statistic, p = _chi2(known, rows)
            tested.append((name, "chi2", statistic, p))
        else:
            result = ks_2samp(known, rows)
            tested.append((name, "ks", float(result.statistic), float(result.pvalue)))
    threshold = p_value / max(len(tested), 1)
    return threshold, [
        FeatureDrift(feature=name, test=test, statistic=stat, p_value=p, drifted=p < threshold)
        for name, test, stat, p in tested
    ]


def _chi2(reference_counts: Floats, codes: Floats) -> tuple[float, float]:
    """Chi-squared of the reference counts against the current counts, over the categories seen
    in either (as the monitor builds its contingency table)."""
    current = np.bincount(codes.astype(np.int64), minlength=len(reference_counts))
    current = current[: len(reference_counts)]
    seen = (reference_counts > 0) | (current > 0)
    if seen.sum() < 2:
        return 0.0, 1.0  # one category on both sides: nothing can differ
    from scipy.stats import chi2_contingency

    result = chi2_contingency(np.vstack([reference_counts[seen], current[seen]]))
    return float(result.statistic), float(result.pvalue)


def _present(column: npt.NDArray[np.floating[Any]]) -> Floats:
    values = np.asarray(column, dtype=np.float64)
    return values[~np.isnan(values)]


def record_rows(record: EdgeCaptureRecord, model: LoadedModel) -> npt.NDArray[np.float32]:
    """The input rows of one captured request, encoded as the model takes them.

    Raises:
        InvalidInput: the captured body cannot be read as the model's input.
    """
    payload = record.captureData.get("endpointInput") or {}
    content_type = media_type(str(payload.get("observedContentType") or CSV))
    data = str(payload.get("data", ""))
    body = base64.b64decode(data) if payload.get("encoding") == "BASE64" else data.encode()
    if content_type == JSON:
        try:
            document = json.loads(body)
        except ValueError:
            raise InvalidInput("the captured body is not JSON") from None
        if isinstance(document, dict) and "inputs" in document:
            return _oip_rows(document["inputs"], model.n_inputs)
    return parse_body(model, content_type, body)


def _oip_rows(inputs: object, width: int) -> npt.NDArray[np.float32]:
    """Open Inference Protocol v2 as the agent takes it: one tensor `[rows, n_inputs]`."""
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidInput("the captured tensor request is not one [rows, n_inputs] tensor")
    try:
        matrix = np.asarray(inputs[0].get("data"), dtype=np.float32).reshape(-1, width)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"the captured tensor does not fit the model: {error}") from None
    return matrix
