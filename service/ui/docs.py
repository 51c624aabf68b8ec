"""/docs (Swagger UI) and /redoc (ReDoc) that work with no internet, and behind the API key.

FastAPI's stock pages load their scripts from a CDN; these load the same projects' bundles from
the `fastapi-offline` package (swagger-ui 5 and redoc 2, files only: its FastAPI factory is not
used), served under /ui/vendor. The pages are static shells: their script fetches /openapi.json
with the key kept in the tab's session storage (the same one the /ui page uses) and asks for it
when the service answers 401, so the schema itself stays behind the key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

SHELLS = {"/docs": "docs.html", "/redoc": "redoc.html"}
VENDOR = "/ui/vendor"
# The bundles set styles inline and ReDoc starts its search worker from a blob: URL.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# ReDoc's footer shows Redocly's logo from their CDN (no option turns it off): served with an empty
# image in its place, so that the page makes no request off the origin.
REDOC = "redoc.standalone.js"
REDOC_LOGO = (
    b"https://cdn.redoc.ly/redoc/logo-mini.svg",
    b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E",
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def vendor_folder() -> Path:
    """The folder of swagger-ui-bundle.js, swagger-ui.css and redoc.standalone.js."""
    import fastapi_offline  # a base dependency; imported here so that a broken install names itself

    return Path(fastapi_offline.__file__).parent / "static"


class _Vendor(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        response.headers["Cache-Control"] = "public, max-age=86400"  # versioned with the package
        return response


def is_public(path: str) -> bool:
    return path in SHELLS


def _shell(file: Path):  # noqa: ANN202 - an endpoint without parameters
    async def shell() -> Response:
        return FileResponse(file, headers=HEADERS, media_type="text/html")

    return shell


def install(app: FastAPI) -> None:
    """Needs the app built with docs_url=None and redoc_url=None (FastAPI's CDN pages)."""
    shells = Path(__file__).parent / "static"
    for path, file in SHELLS.items():
        app.add_api_route(path, _shell(shells / file), methods=["GET"], include_in_schema=False)
    redoc: list[bytes] = []  # read and patched on first use

    @app.get(f"{VENDOR}/{REDOC}", include_in_schema=False)
    async def redoc_bundle() -> Response:
        if not redoc:
            redoc.append((vendor_folder() / REDOC).read_bytes().replace(*REDOC_LOGO))
        headers = {**HEADERS, "Cache-Control": "public, max-age=86400"}
        return Response(redoc[0], media_type="text/javascript", headers=headers)

    # Mounted before the page's own /ui mount (service/ui/__init__.py), which would shadow it.
    app.mount(VENDOR, _Vendor(directory=vendor_folder()), name="ui-vendor")
