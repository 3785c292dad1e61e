"""Open Inference Protocol v2 (KServe / Triton REST) request parsing and response shapes.

Mapping: a v2 model `m` is a Cairn endpoint; its versions are the endpoint's production variants
(`/v2/models/credit/versions/blue/infer` targets variant `blue`; without a version the traffic
weights pick one). Inputs come either as one 2-D tensor `[rows, n_inputs]` in signature order
(any name), or as one 1-D tensor per signature column, named like the column (BYTES for
categories). Each model output is one tensor; `parameters.explain = true` adds `contributions`.

Tensor data is JSON or, with the binary tensor data extension (`cairn.inference.tensors`), raw
bytes after the JSON header: per input (`parameters.binary_data_size`), per requested output
(`parameters.binary_data`) or for every output (`parameters.binary_data_output`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.artifacts import LoadedModel
from cairn.errors import InvalidInput
from cairn.inference import split_outputs
from cairn.inference.tensors import binary_data_size, decode_tensor, encode_tensor

NUMERIC_TYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64"}
)
DATATYPES = NUMERIC_TYPES | {"BYTES"}
_SIGNATURE_TYPES = {"float": "FP32", "int": "INT64", "category": "BYTES", "text": "BYTES"}

Matrix = npt.NDArray[np.float32]


class InferRequest:
    """A validated v2 inference request: id, parameters, inputs and the outputs asked for.

    `binary` is the data after a binary request's JSON header (None for a JSON request): inputs
    with `binary_data_size` take their bytes from it in order, and it must hold nothing else.
    """

    def __init__(self, document: Any, binary: bytes | None = None) -> None:
        if not isinstance(document, dict):
            raise InvalidInput("the inference request must be a JSON object")
        self.document: dict[str, Any] = document
        self.id: str | None = _optional_str(document.get("id"), "id")
        parameters = document.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput('"parameters" must be an object')
        self.parameters: dict[str, Any] = parameters
        inputs = document.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput('"inputs" must be a non-empty list of tensors')
        reader = _NO_BINARY if binary is None else _BinaryReader(binary)
        self.inputs = [_tensor(item, index, reader) for index, item in enumerate(inputs)]
        if binary is not None:
            reader.check_consumed()
        outputs = document.get("outputs")
        if outputs is not None and not isinstance(outputs, list):
            raise InvalidInput('"outputs" must be a list')
        binary_default = parameters.get("binary_data_output") is True
        requested = None if outputs is None else [_output(item) for item in outputs]
        self.requested_outputs: list[str] | None = (
            None if requested is None else [name for name, _ in requested]
        )
        self.binary_outputs: frozenset[str] | bool = binary_default
        if requested is not None:
            self.binary_outputs = frozenset(
                name for name, flag in requested if (binary_default if flag is None else flag)
            )

    @property
    def explain(self) -> bool:
        return self.parameters.get("explain") is True

    def is_binary_output(self, name: str) -> bool:
        binary = self.binary_outputs
        return binary if isinstance(binary, bool) else name in binary

    def as_json(self) -> bytes:
        """The request with its binary data written out as JSON (what data capture stores)."""
        inputs = [
            {"name": t["name"], "shape": t["shape"], "datatype": t["datatype"], "data": t["data"]}
            for t in self.inputs
        ]
        return json.dumps({**self.document, "inputs": inputs}).encode()

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


def _output(item: Any) -> tuple[str, bool | None]:
    """A requested output's name, and whether it asks for binary data (None: not said)."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput('each requested output must be an object with a "name"')
    name = str(item["name"])
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f'output "{name}": "parameters" must be an object')
    if parameters.get("classification"):
        raise InvalidInput(f'output "{name}": the classification extension is not supported')
    binary = parameters.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise InvalidInput(f'output "{name}": binary_data must be true or false')
    return name, binary


class _BinaryReader:
    """Hands each binary input its `binary_data_size` bytes, in order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, name: str, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise InvalidInput(
                f'input "{name}": binary_data_size {size} runs past the body '
                f"({len(self.data) - self.offset} bytes of binary data are left)"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def check_consumed(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise InvalidInput(
                f"the body holds {left} bytes after the inputs' binary data: the "
                "binary_data_size values do not add up to it"
            )


# A JSON request's reader: holds nothing, so any binary input is refused and nothing moves.
_NO_BINARY = _BinaryReader(b"")


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


def _tensor(item: Any, index: int, reader: _BinaryReader) -> dict[str, Any]:
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
    expected = int(np.prod(shape))
    size = binary_data_size(item) if "parameters" in item else None
    if size is not None:
        data = decode_tensor(name, datatype, expected, reader.take(name, size))
        return {"name": name, "shape": shape, "datatype": datatype, "data": data}
    if "data" not in item:
        raise InvalidInput(f'input "{name}" has no "data"')
    data = _flatten(item["data"])
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


def _output_arrays(
    result: npt.NDArray[Any],
    model: LoadedModel,
    requested: list[str] | None,
    contributions: npt.NDArray[Any] | None,
) -> list[tuple[str, npt.NDArray[Any], dict[str, Any]]]:
    """(name, array, parameters) of each output asked for, in the order asked."""
    arrays: list[tuple[str, npt.NDArray[Any], dict[str, Any]]] = [
        (name, column, {}) for name, column in split_outputs(result, model.output_names)
    ]
    if contributions is not None:
        columns = {"columns": ",".join([*model.input_names, "bias"])}
        arrays.append(("contributions", np.asarray(contributions), columns))
    if requested is None:
        return arrays
    available = {output[0]: output for output in arrays}
    unknown = sorted(set(requested) - set(available))
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; the model has {sorted(available)}")
    return [available[name] for name in requested]


def _tensor_header(
    name: str, array: npt.NDArray[Any], parameters: dict[str, Any]
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "name": name,
        "shape": list(array.shape),
        "datatype": _datatype(array),
    }
    if parameters:
        header["parameters"] = parameters
    return header


def output_tensors(
    result: npt.NDArray[Any],
    model: LoadedModel,
    requested: list[str] | None,
    contributions: npt.NDArray[Any] | None = None,
) -> list[dict[str, Any]]:
    """The response's `outputs` as JSON: one tensor per model output (and `contributions`)."""
    tensors: list[dict[str, Any]] = []
    for name, array, parameters in _output_arrays(result, model, requested, contributions):
        tensor: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": _datatype(array),
            "data": array.ravel().tolist(),
        }
        if parameters:
            tensor["parameters"] = parameters
        tensors.append(tensor)
    return tensors


def infer_response(
    header: dict[str, Any],
    result: npt.NDArray[Any],
    model: LoadedModel,
    request: InferRequest,
    contributions: npt.NDArray[Any] | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when an output is binary, its JSON header's length."""
    if request.binary_outputs is False:  # JSON only: the common case, no per-output checks
        tensors = output_tensors(result, model, request.requested_outputs, contributions)
        return json.dumps({**header, "outputs": tensors}).encode(), None
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array, parameters in _output_arrays(
        result, model, request.requested_outputs, contributions
    ):
        tensor = _tensor_header(name, array, parameters)
        if request.is_binary_output(name):
            raw = encode_tensor(array, tensor["datatype"])
            tensor["parameters"] = {**parameters, "binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = array.ravel().tolist()
        outputs.append(tensor)
    body = json.dumps({**header, "outputs": outputs}).encode()
    if not chunks:
        return body, None
    return b"".join([body, *chunks]), len(body)


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
