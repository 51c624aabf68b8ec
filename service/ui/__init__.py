"""The web page at /ui: static HTML, CSS and JavaScript modules shipped inside the package.

Nothing here computes: the page calls the public endpoints (/models, /anomaly-score, /sample,
/reconstruct, /encode) like any client. The static files and /ui/limits.json hold no model data,
so they are served without the API key (the page asks for the key and sends it with each call);
their Content-Security-Policy lets the page reach its own origin only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from service.ui import docs

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui"
# No inline scripts or styles anywhere in the page: 'self' is enough, and nothing else is reachable.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new release's page is picked up at once
}


class _Static(StaticFiles):
    """StaticFiles with the page's security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def is_public(path: str, method: str) -> bool:
    """Paths the API key does not guard: the page's and the docs' static shells (GET/HEAD only)."""
    if method not in ("GET", "HEAD"):
        return False
    return path == PREFIX or path.startswith(PREFIX + "/") or docs.is_public(path)


def install(app: FastAPI) -> None:
    """Serve the page at /ui/ (and /ui/limits.json), and the offline /docs and /redoc."""

    @app.get(PREFIX + "/limits.json", include_in_schema=False)
    async def limits(request: Request) -> Response:
        settings = request.app.state.settings
        body = {
            "max_rows": settings.max_rows,
            "max_body_bytes": settings.max_body_bytes,
            "auth": settings.api_key is not None,
        }
        return JSONResponse(body, headers=HEADERS)

    docs.install(app)  # first: its /ui/vendor mount would be shadowed by the page's /ui mount
    app.mount(PREFIX, _Static(directory=STATIC, html=True), name="ui")
