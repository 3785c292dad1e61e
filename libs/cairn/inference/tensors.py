"""Open Inference Protocol v2 tensors in the binary tensor data extension (Triton's, KServe's).

A binary request or response is a JSON header of `Inference-Header-Content-Length` bytes, then
the raw data of every tensor whose `parameters.binary_data_size` is set, one after the other in
the order the header lists them. Numbers are little-endian and row-major; a BYTES tensor is each
element's 4-byte little-endian length followed by its bytes. Every mismatch between what the
header declares and what the body holds is an `InvalidInput` naming the tensor.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from cairn.errors import InvalidInput

HEADER_LENGTH = "inference-header-content-length"
BINARY_MEDIA_TYPE = "application/octet-stream"
NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: str) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it, as `Inference-Header-Content-Length` says."""
    text = header_length.strip()
    if not text.isdigit():
        raise InvalidInput(
            f"Inference-Header-Content-Length must be a byte count, got {header_length!r}"
        )
    length = int(text)
    if length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {length} but the body holds {len(body)} bytes"
        )
    return body[:length], body[length:]


def binary_data_size(tensor: dict[str, Any]) -> int | None:
    """A tensor's `parameters.binary_data_size`, validated; None when its data is JSON."""
    parameters = tensor.get("parameters")
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(
            f'tensor "{tensor.get("name")}": binary_data_size must be a non-negative integer'
        )
    return size


def decode_tensor(name: str, datatype: str, count: int, raw: bytes) -> list[Any]:
    """`count` elements of `datatype` from raw bytes, as Python values (BYTES as UTF-8 text)."""
    if datatype == "BYTES":
        return _decode_bytes(name, count, raw)
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(f'tensor "{name}": datatype {datatype!r} has no binary form')
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f'tensor "{name}": {count} {datatype} values take {count * dtype.itemsize} bytes, '
            f"binary_data_size is {len(raw)}"
        )
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    return values


def _decode_bytes(name: str, count: int, raw: bytes) -> list[Any]:
    values: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f'tensor "{name}": a BYTES length prefix is cut off')
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(
                f'tensor "{name}": BYTES element {len(values)} declares {length} bytes, '
                f"{len(raw) - offset} are left"
            )
        try:
            values.append(raw[offset : offset + length].decode())
        except UnicodeDecodeError:
            raise InvalidInput(
                f'tensor "{name}": BYTES element {len(values)} is not UTF-8'
            ) from None
        offset += length
    if len(values) != count:
        raise InvalidInput(f'tensor "{name}": its shape needs {count} elements, got {len(values)}')
    return values


def encode_tensor(array: npt.NDArray[Any], datatype: str) -> bytes:
    """An array's raw bytes for `datatype`: little-endian row-major, BYTES length-prefixed."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in np.asarray(array, dtype=object).ravel().tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=NUMPY_TYPES[datatype]).tobytes()
