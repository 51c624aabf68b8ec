"""A deadline for request heads: a client must send its request line and headers within
`header_timeout_s` of connecting, or of its previous response, or the connection is closed.

uvicorn bounds the idle time between keep-alive requests, but not a connection that trickles
its headers a byte at a time, or connects and sends nothing (slowloris): each would hold a
socket forever. Once a request's head has arrived its body is the time budget's business
(service/limits.py). This wraps whichever HTTP protocol uvicorn would pick (httptools when
installed, else h11); both keep the request in progress as `self.cycle`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


def protocol_class(header_timeout_s: float) -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class HeadDeadline(Base):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_done():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self._head_done():  # waiting for the next request's head
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _head_done(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._head_timer = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            if not self._head_done() and not self.transport.is_closing():
                log.info("closing a connection that sent no complete request head in %g s", header_timeout_s)
                self.transport.close()

    return HeadDeadline
