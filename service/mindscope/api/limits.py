"""Per-request limits: a body's size and the time it may take to arrive, enforced while it streams
in, and each request's lifetime. (The memory decoding may take across requests is the data
plane's `DecodeBudget`.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mindscope.api.errors import domain_error_response
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import PayloadTooLarge, RequestTimeout


class BodyLimits:
    """413 when Content-Length, or the bytes received so far (chunked bodies), exceed `max_bytes`;
    408 when the body has not all arrived `timeout_s` after the request began, plus one second per
    `min_rate` bytes received (Apache's mod_reqtimeout rule: a slow link gets the time its bytes
    earn, a client trickling a byte a second does not hold a socket for long)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float = 10.0,
        min_rate: int = 64 * 1024,
        uploads: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.min_rate = min_rate
        self.uploads = uploads or {}  # POST paths that take larger bodies (archives): their cap

    def _too_large(self, limit: int) -> JSONResponse:
        # Outside the app's exception handlers, so the error is mapped here, by the same function.
        return domain_error_response(PayloadTooLarge(f"the request body exceeds {limit} bytes", max_bytes=limit))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.uploads.get(scope["path"], self.max_bytes) if scope["method"] == "POST" else self.max_bytes
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._too_large(limit)(scope, receive, send)
            return
        received = 0
        body_done = False
        response_started = False
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # only a disconnect is left to hear: wait as long as it takes
                return await receive()
            try:
                async with asyncio.timeout_at(started + self.timeout_s + received / self.min_rate):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimedOut from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._too_large(limit)(scope, receive, send)
        except _BodyTimedOut:
            if not response_started:
                await self._timed_out(received)(scope, receive, send)

    def _timed_out(self, received: int) -> JSONResponse:
        allowed = self.timeout_s + received / self.min_rate
        return domain_error_response(
            RequestTimeout(
                f"the request body did not arrive in time: {received} bytes in {allowed:.1f} s; a body gets "
                f"{self.timeout_s:g} s plus one second per {self.min_rate} bytes received",
                received_bytes=received,
                allowed_s=round(allowed, 3),
            )
        )


class _BodyTooLarge(Exception):
    pass


class _BodyTimedOut(Exception):
    pass


class RequestLifetime:
    """Each request's model work gets a deadline (`timeout_s` from arrival) and is cancelled when
    the client disconnects first (`engine.work`).

    Servers report a disconnect only to a `receive()` call, and routes stop calling it once they
    have the body; so a request still running `watch_after_s` after it arrived, body in, gets a
    watcher that keeps one `receive()` pending and relays what it gets to the route, should it ask.
    Most requests finish sooner and never need one (a task per request would cost the event loop
    more than the rest of this middleware).
    """

    def __init__(
        self,
        app: ASGIApp,
        timeout_s: float,
        watch_after_s: float = 0.2,
        on_disconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.watch_after_s = watch_after_s
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body = any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])
        lifetime = _Lifetime(RequestWork(self.timeout_s), receive, send, has_body, self.on_disconnect)
        timer = asyncio.get_running_loop().call_later(self.watch_after_s, lifetime.want_watcher)
        try:
            with request_work(lifetime.work):
                await self.app(scope, lifetime.receive, lifetime.send)
        finally:
            timer.cancel()
            await lifetime.stop_watcher()


class _Lifetime:
    """One request's receive/send, watched for a disconnect once asked to and the body is in."""

    def __init__(
        self, work: RequestWork, receive: Receive, send: Send, has_body: bool, on_disconnect: Callable[[], None]
    ) -> None:
        self.work = work
        self._on_disconnect = on_disconnect
        self._receive = receive
        self._send = send
        self._body_read = not has_body
        self._answered = False
        self._wanted = False
        self._watcher: asyncio.Task[None] | None = None
        self._relayed: asyncio.Queue[Message] | None = None

    async def receive(self) -> Message:
        if self._relayed is not None:
            return await self._relayed.get()
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._client_left()
        elif not message.get("more_body", False):
            self._body_read = True
            if self._wanted:
                self._start_watcher()
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._answered = True
        await self._send(message)

    def want_watcher(self) -> None:
        """Watch from now on, or as soon as the route has read the body (the watcher's `receive()`
        must not take body chunks from the route)."""
        self._wanted = True
        if self._body_read and not self._answered:
            self._start_watcher()

    def _start_watcher(self) -> None:
        if self._watcher is None:
            self._relayed = asyncio.Queue()
            self._watcher = asyncio.create_task(self._watch(self._relayed))

    async def _watch(self, relayed: asyncio.Queue[Message]) -> None:
        while True:
            message = await self._receive()
            await relayed.put(message)
            if message["type"] == "http.disconnect":
                if not self._answered:
                    self._client_left()
                return

    def _client_left(self) -> None:
        if self.work.cancelled is None:
            self.work.cancel("the client disconnected")
            self._on_disconnect()

    async def stop_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
