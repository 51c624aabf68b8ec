"""Bodies of the model endpoints: JSON straight to NumPy, and `application/x-npy` both ways.

JSON: orjson parses the body; `inputs` (or `latents`) becomes a float32 matrix in one NumPy
call when the raw bytes prove it holds nothing but numbers (NumPy alone would turn "1.5" and
true into numbers). Every other body takes the slow path, the pydantic schema, so that each
error message is the schema's (see `handlers.describe_validation`); the fast path only ever
accepts bodies that the schema accepts, with the same values.

`application/x-npy`: the body is the one array (inputs, or latents for /sample), the other
fields are query parameters (`?model=digits-ae&version=1&explain=true`), validated by the same
schema. The header is read by NumPy's header parser and the data by `np.frombuffer`: object
arrays are refused, never deserialised. A response is .npy when the request says
`Accept: application/x-npy`: one (B, ...) array when the JSON body has one per-row field, else
a structured array with one field per JSON field (`r["scores"]`); the model, its version and
any scalar (the threshold) come as `Latentserve-*` headers.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import struct
from email.message import Message
from typing import Any

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.errors import InvalidInput
from service.handlers import FastJSONResponse
from service.schemas import (
    AnomalyScoreOptions,
    AnomalyScoreRequest,
    EncodeRequest,
    ModelRequest,
    ReconstructRequest,
    SampleOptions,
    SampleRequest,
)

NPY = "application/x-npy"
OFFLOAD_BYTES = 256 << 10  # JSON bodies past this are parsed off the event loop
# request schema -> (its options without the array, the array's field)
PARTS: dict[type[BaseModel], tuple[type[BaseModel], str]] = {
    EncodeRequest: (ModelRequest, "inputs"),
    ReconstructRequest: (ModelRequest, "inputs"),
    AnomalyScoreRequest: (AnomalyScoreOptions, "inputs"),
    SampleRequest: (SampleOptions, "latents"),
}
NPY_DTYPES = "float16, float32, float64 or integers"
# Version 1.0 with a plain dtype and a 2-D shape, as np.save writes it (header padded with spaces).
SIMPLE_HEADER = re.compile(
    rb"\x93NUMPY\x01\x00..\{'descr': '([<>|=]?[fiu][1248])', 'fortran_order': (True|False), "
    rb"'shape': \((\d{1,9}), (\d{1,9})\), \} *\n",
    re.DOTALL,
)
# Versions 2.0 and 3.0 differ from 1.0 in the header's length field; 3.0's header is UTF-8,
# which NumPy writes only for field names that need it (refused here anyway).
NPY_VERSIONS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
    (3, 0): np.lib.format.read_array_header_2_0,
}


async def read(request: Request, schema: type[BaseModel]) -> tuple[Any, Any]:
    """The request's options (a pydantic model; for JSON, of `schema`'s fields) and its array.

    The array is a float32/float64 matrix on the fast paths, the schema's lists otherwise, or
    None (a /sample without latents); the runtime checks its width and values either way.
    """
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    options, field = PARTS[schema]
    if content_type.split(";")[0].strip().lower() == NPY:
        return options_from_query(request.query_params.multi_items(), options), read_npy(body)
    if len(body) > OFFLOAD_BYTES:  # tens of ms of parsing: in a thread, so that the loop keeps its turns
        return await asyncio.to_thread(parse_json, body, content_type, schema)
    return parse_json(body, content_type, schema)


def reply(request: Request, model: Any, fields: dict[str, Any]) -> Response:
    """JSON, or .npy when the client accepts it (see the module's docstring)."""
    if NPY not in request.headers.get("accept", ""):
        return FastJSONResponse({"model": model.name, "version": model.version, **fields})
    headers = {"Latentserve-Model": model.name, "Latentserve-Version": str(model.version)}
    rows = {}
    for name, value in fields.items():
        if isinstance(value, np.ndarray):
            rows[name] = value
        elif value is not None:
            headers[f"Latentserve-{name.replace('_', '-').title()}"] = repr(float(value))
    return Response(npy_bytes(records(rows)), media_type=NPY, headers=headers)


# ----- JSON ------------------------------------------------------------------------------------
def parse_json(body: bytes, content_type: str, schema: type[BaseModel]) -> tuple[Any, Any]:
    """(options, array) from a JSON body; raises RequestValidationError as FastAPI would."""
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not _is_json(content_type):
        raise RequestValidationError(
            [{"type": "model_attributes_type", "loc": ("body",), "msg": "not JSON", "input": body}]
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        error = {"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": e.msg}}], body=e.doc) from None
    options, field = PARTS[schema]
    fast = _fast(body, data, options, field)
    if fast is not None:
        return fast
    try:
        parsed = schema.model_validate(data, from_attributes=True)
    except ValidationError as e:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in e.errors()]
        raise RequestValidationError(errors, body=data) from None
    return parsed, getattr(parsed, field)


def _is_json(content_type: str) -> bool:
    """FastAPI's test: application/json or application/*+json, parameters allowed."""
    if content_type == "application/json":
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _fast(body: bytes, data: Any, options: type[BaseModel], field: str) -> tuple[Any, np.ndarray] | None:
    """(options, float32 matrix) when `data[field]` is plainly a matrix of JSON numbers, else None."""
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        return None
    rest = {k: v for k, v in data.items() if k != field}
    if not _only_numbers_in(field, body, data, rest):
        return None
    try:
        # float64 first, as the schema's path does (JSON integers become Python floats there).
        x = np.array(data[field], dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # ragged, nested deeper, a dict, a huge integer
        return None
    if x.ndim != 2 or x.size == 0:
        return None
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():  # null became NaN, or a value beyond float32: the slow path says which
        return None
    try:
        return options.model_validate(rest), x
    except ValidationError:
        return None


def _only_numbers_in(field: str, body: bytes, data: dict[str, Any], rest: dict[str, Any]) -> bool:
    """True when `data[field]` holds no string and no boolean, from counts over the raw bytes.

    Without a backslash in the body, every string's raw bytes are its text, so the quotes and
    the words true/false in the body are those of the keys, the other fields and the literals
    true/false; when the keys and the other fields account for all of them, the array has none.
    """
    if b"\\" in body or not all(v is None or isinstance(v, (str, int, float)) for v in rest.values()):
        return False
    strings = [*data, *(v for v in rest.values() if isinstance(v, str))]
    if body.count(b'"') != 2 * len(strings):
        return False
    flags = sum(isinstance(v, bool) for v in rest.values())
    in_strings = sum(s.count("true") + s.count("false") for s in strings)
    return body.count(b"true") + body.count(b"false") == flags + in_strings


# ----- application/x-npy -----------------------------------------------------------------------
def options_from_query(params: list[tuple[str, str]], options: type[BaseModel]) -> Any:
    """The options of an .npy request, from its query string: numbers and true/false as in JSON."""
    values: dict[str, Any] = {}
    for name, text in params:
        try:
            values[name] = text if name == "model" else orjson.loads(text)
        except orjson.JSONDecodeError:
            values[name] = text  # the schema names the field and shows the text
    try:
        return options.model_validate(values)
    except ValidationError as e:
        errors = [{**error, "loc": ("query", *error["loc"])} for error in e.errors()]
        raise RequestValidationError(errors) from None


def read_npy(body: bytes) -> np.ndarray:
    """A 2-D numeric array from .npy bytes; InvalidInput (422) naming the problem otherwise."""
    shape: tuple[int, ...]
    simple = SIMPLE_HEADER.match(body)
    if simple is not None and struct.unpack("<H", body[8:10])[0] == simple.end() - 10:
        # What np.save writes for a plain 2-D array: no need for the full parser.
        descr, fortran, rows, cols = simple.groups()
        try:
            dtype = np.dtype(descr.decode())
        except TypeError:  # "<f1", "<u8"... that NumPy has no such type for
            raise InvalidInput(
                f"the .npy body has dtype {descr.decode()!r}, which is not a NumPy type; expected {NPY_DTYPES}"
            ) from None
        fortran_order, shape = fortran == b"True", (int(rows), int(cols))
        offset = simple.end()
    else:
        stream = io.BytesIO(body)
        try:
            version = np.lib.format.read_magic(stream)
            if version not in NPY_VERSIONS:
                raise ValueError(f"format version {version} is not one of {sorted(NPY_VERSIONS)}")
            shape, fortran_order, dtype = NPY_VERSIONS[version](stream)  # a literal dict, no code
        except (ValueError, EOFError, SyntaxError, TypeError, RecursionError, MemoryError) as e:
            raise InvalidInput(f"the body is not a valid .npy file ({NPY}): {e}") from None
        offset = stream.tell()
    if dtype.hasobject:
        raise InvalidInput("the .npy body holds Python objects, which are never loaded: send an array of numbers")
    if dtype.names is not None or dtype.kind not in "fiu":
        raise InvalidInput(f"the .npy body has dtype {dtype}; expected {NPY_DTYPES}")
    if len(shape) != 2 or min(shape) < 0:
        raise InvalidInput(f"the .npy body has shape {shape}; expected 2 dimensions (rows, values per row)")
    data = memoryview(body)[offset:]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has extra bytes"
        raise InvalidInput(
            f"the .npy body {problem}: its header says shape {shape} of {dtype} ({expected} bytes of data), "
            f"{len(data)} bytes follow the header"
        )
    x = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    if dtype.kind != "f" or dtype.itemsize < 4:
        return x.astype(np.float64)  # integers and float16, exactly; the runtime makes them float32
    return np.ascontiguousarray(x)


def records(rows: dict[str, np.ndarray]) -> np.ndarray:
    """One per-row field: the array itself; several: a structured array, one field each."""
    if len(rows) == 1:
        return next(iter(rows.values()))
    n = len(next(iter(rows.values())))
    out = np.empty(n, dtype=[(name, a.dtype, a.shape[1:]) for name, a in rows.items()])
    for name, a in rows.items():
        out[name] = a
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    """.npy format 1.0 (what np.save writes), without the file machinery."""
    array = np.ascontiguousarray(array)
    descr = np.lib.format.dtype_to_descr(array.dtype)
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {array.shape!r}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"  # magic + version + length + header: 64-byte aligned
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + array.tobytes()
