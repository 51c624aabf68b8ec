"""Admin endpoints, mounted only when an API key is set (without one they do not exist: 404).

`POST /admin/reload` loads new versions from the repository while the current ones keep
serving, then swaps them in at once (see `ModelRepository.reload`). SIGHUP does the same.
"""

from __future__ import annotations

from dataclasses import asdict

import anyio
from fastapi import APIRouter
from starlette.responses import Response

from service.handlers import FastJSONResponse
from service.routes import RepositoryDep
from service.schemas import ReloadResponse
from service.workers import ask_supervisor_to_reload

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={409: {"model": ReloadResponse, "description": "A version was refused; the previous ones keep serving."}},
)
async def reload(repository: RepositoryDep) -> Response:
    """Load new versions from the repository atomically: 200 when every version on disk serves, 409 when
    one was refused (the response and /models say why; the previous versions keep serving)."""
    report = await anyio.to_thread.run_sync(repository.reload)
    ask_supervisor_to_reload()  # with --workers N, the other workers reload too
    body = asdict(report)
    if report.error:
        return FastJSONResponse(body, status_code=409)
    if report.refused:
        refused = "; ".join(f"{r['model']} version {r['version']}: {r['reason']}" for r in report.refused)
        body["error"] = f"refused {refused}; the previous versions keep serving"
        return FastJSONResponse(body, status_code=409)
    return FastJSONResponse(body)
