"""Optional API key: with `LATENTSERVE_API_KEY` set, every request but the probes must carry it.

The key travels as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Keys are compared as
SHA-256 digests with `hmac.compare_digest`, so that neither the key's characters nor its length
show in the answer's timing. The key is never logged or echoed; a refusal is a 401 naming the
headers to use. Unknown paths are refused too (401, not 404), so that nothing about the API is
learnt without the key. The probes (/healthz, /readyz, /metrics) stay open for orchestrators and
scrapers; they reveal model names and versions, not data. The static shells of the web page
(/ui) and of the docs (/docs, /redoc) are open too: they hold no model data, and they ask for the
key, which they send with every call they make (service/ui).
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from service.limits import PROBES
from service.middleware import send_error
from service.ui import is_public

MAX_CANDIDATES = 4  # headers checked per request: a flood of headers costs no more than this
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="latentserve"'}


class ApiKey:
    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._digest = hashlib.sha256(key.encode()).digest()

    def accepts(self, presented: bytes) -> bool:
        return hmac.compare_digest(hashlib.sha256(presented).digest(), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES or is_public(scope["path"], scope["method"]):
            await self.app(scope, receive, send)
            return
        candidates = presented_keys(scope["headers"])
        if not candidates:
            message = "this endpoint needs the API key: send Authorization: Bearer <key> or X-API-Key: <key>"
        elif not any([self.accepts(c) for c in candidates]):  # a list: every candidate is compared
            message = "the API key sent is not valid"
        else:
            await self.app(scope, receive, send)
            return
        await send_error(send, 401, message, CHALLENGE)


def presented_keys(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    found = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                found.append(credentials.strip())
        elif name == b"x-api-key" and value.strip():
            found.append(value.strip())
        if len(found) == MAX_CANDIDATES:
            break
    return found
