"""The OpenAPI document, made honest about what the middleware answers before any route runs.

Routes declare their own errors; this adds, to every operation the middleware guards, the
statuses it can answer (401 without the key, 408/504 past the time budget, 413 over the body
limit, 503 when busy) and the security schemes when a key is set. FastAPI's default 422 schema
is replaced by ours: every error body in this service is `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.limits import PROBES, exempt

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
GUARDED = {
    503: "Busy: too many requests in flight (Retry-After).",
    504: "The request took longer than its time budget.",
}
SLOW_BODY = {408: "The request body did not arrive within the time budget."}
TOO_LARGE = {413: "Body over the size limit (the message states it)."}
UNAUTHORIZED = "The API key is missing or wrong (WWW-Authenticate: Bearer)."


def install(app: FastAPI, auth: bool) -> None:
    """Replace `app.openapi` with a version that documents the middleware's answers."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                _document(operation, path, method, auth)
        if auth:
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(operation: dict[str, Any], path: str, method: str, auth: bool) -> None:
    responses = operation.setdefault("responses", {})
    for status, response in responses.items():
        if status == "422":  # FastAPI's default body; ours is {"error": ...}
            response["content"] = {"application/json": {"schema": ERROR_REF}}
    added: dict[int, str] = dict(TOO_LARGE) if method == "post" else {}
    if not exempt(path):
        added |= GUARDED | (SLOW_BODY if method == "post" else {})
    if auth and path not in PROBES:
        added[401] = UNAUTHORIZED
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    for status, description in added.items():
        existing = responses.get(str(status))
        if existing is None:
            responses[str(status)] = {
                "description": description,
                "content": {"application/json": {"schema": ERROR_REF}},
            }
        elif description not in existing.get("description", ""):
            existing["description"] = f"{existing.get('description', '')} {description}".strip()
