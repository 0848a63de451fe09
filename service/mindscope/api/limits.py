"""Per-request limits: a body-size cap enforced while the body streams in, and the request's lifetime."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mindscope.api.errors import error_response
from mindscope.engine.work import RequestWork, request_work


class BodySizeLimit:
    """413 when Content-Length, or the bytes received so far (chunked bodies), exceed `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        return error_response(
            413,
            "payload_too_large",
            f"the request body exceeds {self.max_bytes} bytes",
            {"max_bytes": self.max_bytes},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large()(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._too_large()(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class RequestLifetime:
    """Each request's model work gets a deadline (`timeout_s` from arrival) and is cancelled when
    the client disconnects first (`engine.work`).

    Servers report a disconnect only to a `receive()` call, and routes stop calling it once they
    have the body; so once the body is in, a watcher keeps one `receive()` pending and relays what
    it gets to the route, should it ask.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        work = RequestWork(self.timeout_s)
        headers = dict(scope["headers"])
        body_read = asyncio.Event()
        if b"content-length" not in headers and b"transfer-encoding" not in headers:
            body_read.set()
        relayed: asyncio.Queue[Message] = asyncio.Queue()
        answered = False

        async def watch() -> None:
            await body_read.wait()
            while True:
                message = await receive()
                await relayed.put(message)
                if message["type"] == "http.disconnect":
                    if not answered:
                        work.cancel("the client disconnected")
                    return

        async def app_receive() -> Message:
            if body_read.is_set():
                return await relayed.get()
            message = await receive()
            if message["type"] == "http.disconnect":
                work.cancel("the client disconnected")
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        watcher = asyncio.create_task(watch())
        try:
            with request_work(work):
                await self.app(scope, app_receive, app_send)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
