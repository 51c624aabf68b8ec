"""Turn every failure into one body shape, `{"error": "..."}`, with the right status code.

`ServiceError`s carry their status; FastAPI's validation errors (bad JSON, wrong types,
missing or unknown fields) become 422 with a message naming the field, what was expected
and what was received, e.g. "inputs[2][1] is not a finite number (got NaN)".
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from service.errors import ServiceError

log = logging.getLogger(__name__)
MAX_REPORTED = 3  # validation problems listed in one message; the rest are counted


class FastJSONResponse(JSONResponse):
    """orjson with NumPy support: arrays go out without a detour through Python lists.

    A JSONResponse subclass so that FastAPI documents each route's response model in OpenAPI.
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_numpy_fallback, option=orjson.OPT_SERIALIZE_NUMPY)


def _numpy_fallback(value: Any) -> Any:
    # orjson writes only C-contiguous arrays itself (a graph output can be a strided view).
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> FastJSONResponse:
    return FastJSONResponse({"error": message}, status_code=status, headers=headers)


def describe_validation(errors: list[dict[str, Any]], body: Any = None) -> str:
    """One readable sentence per problem, e.g. 'row 2 ... ', joined; at most MAX_REPORTED listed."""
    parts = [_describe(e, body) for e in errors[:MAX_REPORTED]]
    if len(errors) > MAX_REPORTED:
        parts.append(f"and {len(errors) - MAX_REPORTED} more problems")
    return "; ".join(parts)


def _describe(e: dict[str, Any], body: Any = None) -> str:
    loc = list(e.get("loc", ()))
    if loc and loc[0] == "body":
        loc = loc[1:]
    kind, ctx = e.get("type", ""), e.get("ctx") or {}
    where = _where(loc)
    got = _got(e.get("input"))
    if kind == "json_invalid":
        pos = loc[0] if loc and isinstance(loc[0], int) else None
        if isinstance(body, str) and pos is not None and body[pos : pos + 4].lstrip("-")[:3] in ("NaN", "Inf"):
            return f"the body is not valid JSON: NaN and Infinity at character {pos} are not JSON numbers"
        return f"the body is not valid JSON: {ctx.get('error', e.get('msg'))} at character {pos}"
    if not loc and kind in ("missing", "model_attributes_type", "dict_type"):
        sent = "nothing" if kind == "missing" else "a body that is not a JSON object"
        if isinstance(e.get("input"), (bytes, bytearray)):
            sent = "a body without a JSON Content-Type"
        return f"the body must be a JSON object sent with Content-Type: application/json; got {sent}"
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"{where} is not a known field (see /docs for the fields of this endpoint)"
    if kind == "finite_number":
        return f"{where} is not a finite number (got {got})"
    if kind in ("float_type", "float_parsing", "int_type", "int_parsing", "bool_type", "string_type"):
        expected = {"float": "a number", "int": "an integer", "bool": "true or false", "string": "a string"}
        return f"{where} should be {expected[kind.split('_')[0]]}, got {got}"
    if kind == "list_type":
        return f"{where} should be a list, got {got}"
    if kind == "too_short":
        return f"{where} is empty: expected at least {ctx.get('min_length', 1)} item(s)"
    return f"{where}: {e.get('msg', 'invalid')} (got {got})"


def _where(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the body"


def _got(value: Any) -> str:
    if isinstance(value, float) and not np.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, describe_validation(list(exc.errors()), exc.body))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no endpoint at {request.url.path}; the endpoints are listed at /docs"
    elif exc.status_code == 400 and message == "There was an error parsing the body":
        message = "the body could not be read as JSON"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed or 'another method'}"
    return error_response(exc.status_code, message, dict(exc.headers) if exc.headers else None)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug, not bad input: log the traceback, tell the client no more than that.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
