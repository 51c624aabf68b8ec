"""The Open Inference Protocol's wire format: inference request and response bodies, JSON or binary.

A request body is a JSON object, optionally followed by raw tensor bytes (the binary tensor
extension): the `Inference-Header-Content-Length` header gives the JSON's length, and each input
sent as bytes says `"parameters": {"binary_data_size": N}` in place of `data`; the bytes follow
the JSON in input order, little-endian and row-major. JSON `data` may be flat or nested in the
shape. Outputs go back binary when the request asks (`binary_data_output`, or `binary_data` per
requested output), with the same header on the response.

Everything here is about bytes and arrays, nothing about models: `service/oip.py` maps tensors to
the runtime. Every problem with a body is a `BadTensor` (400, the protocol's convention) whose
message names what was expected and what was received; nothing a client sends reaches a 500.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import PayloadTooLarge, ServiceError

HEADER = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
# OIP datatype <-> NumPy dtype, little-endian as the binary extension says. BYTES and BF16 have no
# fixed-size NumPy equivalent here: they are refused by name.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
UNSUPPORTED = frozenset({"BYTES", "BF16"})
MAX_DIMS = 8
NO_HEADER = (
    "no Inference-Header-Content-Length header was sent, so the whole body was read as JSON: "
    "a body carrying binary tensors needs it"
)


class BadTensor(ServiceError):
    """A request body that is not a valid inference request, or a tensor the model cannot take."""

    status = 400


@dataclass
class Tensor:
    name: str
    datatype: str
    array: np.ndarray  # in its sent dtype and shape


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request's binary_data_output decides


@dataclass
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool = False  # the request's binary_data_output


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body as sent before `Content-Encoding` (gzip or deflate, as tritonclient can compress)."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    kind = encoding.strip().lower()
    if kind not in ("gzip", "deflate"):
        raise BadTensor(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if kind == "gzip" else 15)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as e:
        raise BadTensor(f"the body is not valid {kind} data: {e}") from None
    if len(out) > max_bytes:
        raise PayloadTooLarge(
            f"the {kind} body inflates past the limit of {max_bytes} bytes (LATENTSERVE_MAX_BODY_BYTES)"
        )
    if not inflater.eof:
        raise BadTensor(f"the {kind} body is truncated")
    return out


# ----- requests --------------------------------------------------------------------------------
def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an inference request; raises BadTensor naming the first problem."""
    head, rest = _split(body, header_length)
    try:
        data = orjson.loads(head)
    except orjson.JSONDecodeError as e:
        hint = ""
        if header_length is None and "after document" in e.msg:
            hint = f"; {NO_HEADER}"
        raise BadTensor(f"the inference request is not valid JSON: {e.msg} at character {e.pos}{hint}") from None
    if not isinstance(data, dict):
        raise BadTensor(f"the inference request must be a JSON object, got {_kind(data)}")
    request_id = data.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadTensor(f"id must be a string, got {_kind(request_id)}")
    parameters = _parameters(data.get("parameters"), "parameters")
    binary_output = parameters.pop("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadTensor(f"parameters.binary_data_output must be true or false, got {_kind(binary_output)}")
    raw_inputs = data.get("inputs")
    if not isinstance(raw_inputs, list):
        raise BadTensor(f"inputs must be a list of tensors, got {_kind(raw_inputs)}")
    inputs, offset = [], 0
    for i, item in enumerate(raw_inputs):
        try:
            tensor, offset = _input(item, i, rest, offset)
        except BadTensor as e:
            if header_length is None and "binary_data_size" in e.message and "past the end" in e.message:
                raise BadTensor(f"{e.message}; {NO_HEADER}") from None
            raise
        inputs.append(tensor)
    if offset != len(rest):
        raise BadTensor(
            f"the body has {len(rest)} bytes after the JSON header but the inputs' binary_data_size "
            f"values add up to {offset}"
        )
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise BadTensor(f"input names must be unique, got {names}")
    return InferRequest(request_id, parameters, inputs, _outputs(data.get("outputs")), binary_output)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise BadTensor(f"Inference-Header-Content-Length must be a whole number of bytes, got {header_length!r}")
    n = int(text)
    if not 0 < n <= len(body):
        raise BadTensor(f"Inference-Header-Content-Length is {n} but the body has {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


def _input(item: Any, i: int, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    where = f"inputs[{i}]"
    if not isinstance(item, dict):
        raise BadTensor(f"{where} must be an object with name, shape, datatype and data, got {_kind(item)}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadTensor(f"{where}.name must be a non-empty string, got {_kind(name)}")
    where = f"input {name!r}"
    shape = item.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(type(d) is int and 0 <= d < 2**63 for d in shape)
    ):
        raise BadTensor(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers, got {_got(shape)}")
    dtype = _dtype(item.get("datatype"), where)
    datatype: str = item["datatype"]
    parameters = _parameters(item.get("parameters"), f"{where} parameters")
    count = math.prod(shape)
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise BadTensor(f"{where} has both data and parameters.binary_data_size: send one")
        if type(size) is not int or size < 0:
            raise BadTensor(f"{where}: binary_data_size must be a non-negative integer, got {_got(size)}")
        expected = count * dtype.itemsize
        if size != expected:
            raise BadTensor(
                f"{where}: binary_data_size is {size} bytes, but shape {shape} of {datatype} is {expected} bytes"
            )
        if offset + size > len(binary):
            raise BadTensor(
                f"{where}: binary_data_size {size} at byte {offset} runs past the end of the binary data "
                f"({len(binary)} bytes follow the JSON header)"
            )
        raw = binary[offset : offset + size]
        array = np.frombuffer(raw, np.uint8).view(bool) if datatype == "BOOL" else np.frombuffer(raw, dtype)
        if datatype == "BOOL" and (np.frombuffer(raw, np.uint8) > 1).any():
            raise BadTensor(f"{where}: BOOL bytes must be 0 or 1")
        return Tensor(name, datatype, array.reshape(shape)), offset + size
    if "data" not in item:
        raise BadTensor(f"{where} has neither data nor parameters.binary_data_size")
    flat = _flatten(item["data"], where)
    if len(flat) != count:
        raise BadTensor(f"{where}: shape {shape} holds {count} values, but data has {len(flat)}")
    return Tensor(name, datatype, _from_json(flat, datatype, dtype, where).reshape(shape)), offset


def _dtype(datatype: Any, where: str) -> np.dtype:
    if not isinstance(datatype, str):
        raise BadTensor(f"{where}: datatype must be a string such as FP32, got {_kind(datatype)}")
    if datatype in UNSUPPORTED:
        raise BadTensor(f"{where}: datatype {datatype} is not supported here; the models take FP32")
    if datatype not in DTYPES:
        raise BadTensor(f"{where}: unknown datatype {_got(datatype)}; expected one of {', '.join(DTYPES)}")
    return DTYPES[datatype]


def _flatten(data: Any, where: str, depth: int = 0) -> list[Any]:
    """Nested lists, row-major, to one flat list; the nesting must be regular (a tensor, not ragged)."""
    if not isinstance(data, list):
        return [data]  # a scalar tensor, or a mistake the count check names
    if not any(isinstance(v, list) for v in data):
        return data
    if depth >= MAX_DIMS:
        raise BadTensor(f"{where}: data nests lists deeper than {MAX_DIMS} levels")
    if not all(isinstance(v, list) for v in data) or len({len(v) for v in data}) > 1:
        raise BadTensor(f"{where}: data nests lists of different lengths (or lists beside numbers)")
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v, where, depth + 1))
    return out


def _from_json(flat: list[Any], datatype: str, dtype: np.dtype, where: str) -> np.ndarray:
    if datatype == "BOOL":
        ok = all(type(v) is bool for v in flat)
        expected = "true or false"
    elif dtype.kind == "f":
        ok = all(type(v) in (int, float) for v in flat)
        expected = "numbers"
    else:
        ok = all(type(v) is int for v in flat)
        expected = "integers"
    if not ok:
        bad = next(v for v in flat if not _fits(v, datatype, dtype))
        raise BadTensor(f"{where}: {datatype} data must be {expected}, got {_got(bad)}")
    try:
        with np.errstate(over="ignore"):
            return np.array(flat, dtype=np.float64 if dtype.kind == "f" else dtype).astype(dtype)
    except OverflowError:
        raise BadTensor(f"{where}: a value does not fit {datatype}") from None


def _fits(v: Any, datatype: str, dtype: np.dtype) -> bool:
    if datatype == "BOOL":
        return type(v) is bool
    return type(v) in ((int, float) if dtype.kind == "f" else (int,))


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadTensor(f"{where} must be an object of name: value pairs, got {_kind(value)}")
    for k, v in value.items():
        if not isinstance(v, (str, int, float, bool)):
            raise BadTensor(f"{where}.{k} must be a string, number or boolean, got {_kind(v)}")
    return dict(value)


def _outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadTensor(f"outputs must be a list of {{name}} objects, got {_kind(value)}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadTensor(f"outputs[{i}] must be an object with a string name, got {_got(item)}")
        parameters = _parameters(item.get("parameters"), f"outputs[{i}].parameters")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise BadTensor(f"outputs[{i}].parameters.binary_data must be true or false, got {_kind(binary)}")
        if parameters.get("classification"):
            raise BadTensor("the classification extension is not supported: these models do not classify")
        out.append(RequestedOutput(item["name"], binary))
    return out


# ----- responses -------------------------------------------------------------------------------
def datatype_of(array: np.ndarray) -> str:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    return next(name for name, d in DTYPES.items() if d == dtype)


def encode_response(
    header: dict[str, Any], outputs: list[tuple[str, np.ndarray, bool]]
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) for `header` (model_name, model_version, id, parameters) plus the outputs.

    Each output is (name, array, binary); with any binary one the body is the JSON, then the
    bytes, and the headers carry its length.
    """
    described, blobs = [], []
    for name, array, binary in outputs:
        tensor: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary:
            raw = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = np.ascontiguousarray(array).reshape(-1)
        described.append(tensor)
    head = orjson.dumps({**header, "outputs": described}, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, {"content-type": JSON_TYPE}
    return head + b"".join(blobs), {"content-type": BINARY_TYPE, HEADER: str(len(head))}


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _got(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
