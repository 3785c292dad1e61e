"""Open Inference Protocol v2 (KServe / Triton REST) request parsing and response shapes.

Mapping: a v2 model `m` is a Cairn endpoint; its versions are the endpoint's production variants
(`/v2/models/credit/versions/blue/infer` targets variant `blue`; without a version the traffic
weights pick one). Inputs come either as one 2-D tensor `[rows, n_inputs]` in signature order
(any name), or as one 1-D tensor per signature column, named like the column (BYTES for
categories). Each model output is one tensor; `parameters.explain = true` adds `contributions`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.artifacts import LoadedModel
from cairn.errors import InvalidInput
from cairn.inference import split_outputs

NUMERIC_TYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64"}
)
DATATYPES = NUMERIC_TYPES | {"BYTES"}
_SIGNATURE_TYPES = {"float": "FP32", "int": "INT64", "category": "BYTES"}

Matrix = npt.NDArray[np.float32]


class InferRequest:
    """A validated v2 inference request: id, parameters, inputs and the outputs asked for."""

    def __init__(self, document: Any) -> None:
        if not isinstance(document, dict):
            raise InvalidInput("the inference request must be a JSON object")
        self.id: str | None = _optional_str(document.get("id"), "id")
        parameters = document.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput('"parameters" must be an object')
        self.parameters: dict[str, Any] = parameters
        inputs = document.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput('"inputs" must be a non-empty list of tensors')
        self.inputs = [_tensor(item, index) for index, item in enumerate(inputs)]
        outputs = document.get("outputs")
        if outputs is not None and not isinstance(outputs, list):
            raise InvalidInput('"outputs" must be a list')
        self.requested_outputs: list[str] | None = (
            None if outputs is None else [_output_name(item) for item in outputs]
        )

    @property
    def explain(self) -> bool:
        return self.parameters.get("explain") is True

    def matrix(self, model: LoadedModel) -> Matrix:
        """Encode the inputs in the model's signature order."""
        names = model.input_names
        if len(self.inputs) == 1 and len(self.inputs[0]["shape"]) == 2:
            tensor = self.inputs[0]
            rows, width = tensor["shape"]
            data = tensor["data"]
            return model.encode_rows([data[r * width : (r + 1) * width] for r in range(rows)])
        if len(self.inputs) == 1 and len(names) > 1 and len(self.inputs[0]["shape"]) == 1:
            tensor = self.inputs[0]
            if tensor["name"] not in names:  # one row as a flat vector
                return model.encode_rows([tensor["data"]])
        by_name = {tensor["name"]: tensor for tensor in self.inputs}
        if set(by_name) != set(names):
            missing = sorted(set(names) - set(by_name))
            unknown = sorted(set(by_name) - set(names))
            raise InvalidInput(
                "send one [rows, columns] tensor or one tensor per input column: "
                f"missing {missing}, unknown {unknown}",
                missing=missing,
                unknown=unknown,
            )
        lengths = {len(tensor["data"]) for tensor in self.inputs}
        if len(lengths) != 1:
            raise InvalidInput("every column tensor must hold the same number of rows")
        columns = [by_name[name]["data"] for name in names]
        return model.encode_rows([list(row) for row in zip(*columns, strict=True)])


def _optional_str(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f'"{field}" must be a string')


def _output_name(item: Any) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput('each requested output must be an object with a "name"')
    return str(item["name"])


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _tensor(item: Any, index: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidInput(f"input {index} must be an object")
    name, shape, datatype = item.get("name"), item.get("shape"), item.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f'input {index} has no "name"')
    if (
        not isinstance(shape, list)
        or not shape
        or len(shape) > 2
        or not all(isinstance(dim, int) and dim >= 0 for dim in shape)
    ):
        raise InvalidInput(f'input "{name}": "shape" must be a list of 1 or 2 non-negative ints')
    if datatype not in DATATYPES:
        raise InvalidInput(f'input "{name}": unknown datatype {datatype!r}')
    if "data" not in item:
        raise InvalidInput(f'input "{name}" has no "data"')
    data = _flatten(item["data"])
    expected = int(np.prod(shape))
    if len(data) != expected:
        raise InvalidInput(
            f'input "{name}": shape {shape} needs {expected} values, got {len(data)}'
        )
    if datatype in NUMERIC_TYPES and not all(
        isinstance(value, int | float) and not isinstance(value, str) for value in data
    ):
        raise InvalidInput(f'input "{name}": {datatype} data must be numbers')
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _datatype(array: npt.NDArray[Any]) -> str:
    if array.dtype == np.float32:
        return "FP32"
    if np.issubdtype(array.dtype, np.floating):
        return "FP64"
    if np.issubdtype(array.dtype, np.integer):
        return "INT64"
    return "BYTES"


def output_tensors(
    result: npt.NDArray[Any],
    model: LoadedModel,
    requested: list[str] | None,
    contributions: npt.NDArray[Any] | None = None,
) -> list[dict[str, Any]]:
    """The response's `outputs`: one tensor per model output (and `contributions`)."""
    tensors: list[dict[str, Any]] = [
        {
            "name": name,
            "shape": list(column.shape),
            "datatype": _datatype(column),
            "data": column.ravel().tolist(),
        }
        for name, column in split_outputs(result, model.output_names)
    ]
    if contributions is not None:
        array = np.asarray(contributions)
        tensors.append(
            {
                "name": "contributions",
                "shape": list(array.shape),
                "datatype": _datatype(array),
                "data": array.ravel().tolist(),
                "parameters": {"columns": ",".join([*model.input_names, "bias"])},
            }
        )
    if requested is None:
        return tensors
    available = {tensor["name"]: tensor for tensor in tensors}
    unknown = sorted(set(requested) - set(available))
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; the model has {sorted(available)}")
    return [available[name] for name in requested]


def model_metadata(name: str, versions: list[str], model: LoadedModel) -> dict[str, Any]:
    """`GET /v2/models/{m}`: one input tensor per signature column, one output per model output."""
    return {
        "name": name,
        "versions": versions,
        "platform": model.manifest.framework,
        "inputs": [
            {"name": column.name, "datatype": _SIGNATURE_TYPES[column.dtype], "shape": [-1]}
            for column in model.manifest.signature.inputs
        ],
        "outputs": [
            {
                "name": column.name,
                "datatype": "FP32" if column.dtype == "float" else "INT64",
                "shape": [-1],
            }
            for column in model.manifest.signature.outputs
        ],
    }
