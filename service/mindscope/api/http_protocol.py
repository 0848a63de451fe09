"""uvicorn's HTTP protocol with a time limit on request headers.

uvicorn times out idle keep-alive connections but not a request whose headers never finish: a
client sending a byte a second holds its socket (a file descriptor, a parser) for as long as it
likes, and a few hundred such clients exhaust the server's descriptors. Here a connection's
request headers must all arrive within `header_timeout_s` of its first byte (of the connection, or
of the next request on a kept-alive one), else it gets 408 and is closed. The body's time limit
is the ASGI middleware's (`api.limits.BodyLimits`), which answers in the service's JSON envelope.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("mindscope")

_TIMEOUT_BODY = json.dumps(
    {"error": {"code": "request_timeout", "message": "the request headers did not arrive in time", "details": {}}}
).encode()


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        logger.info("closed a connection from %s: its headers took over %g s", self.client, self.header_timeout_s)
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(_TIMEOUT_BODY)
            + _TIMEOUT_BODY
        )
        self.transport.close()


def header_timeout_protocol(header_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with this time limit."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})
