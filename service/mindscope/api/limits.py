"""Per-request limits: a body's size and the time it may take to arrive, enforced while it streams
in; the memory that decoding may take across requests; and each request's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mindscope.api.errors import domain_error_response
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import Overloaded, PayloadTooLarge, RequestTimeout


class BodyLimits:
    """413 when Content-Length, or the bytes received so far (chunked bodies), exceed `max_bytes`;
    408 when the body has not all arrived `timeout_s` after the request began, plus one second per
    `min_rate` bytes received (Apache's mod_reqtimeout rule: a slow link gets the time its bytes
    earn, a client trickling a byte a second does not hold a socket for long)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0, min_rate: int = 64 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    def _too_large(self) -> JSONResponse:
        # Outside the app's exception handlers, so the error is mapped here, by the same function.
        return domain_error_response(
            PayloadTooLarge(f"the request body exceeds {self.max_bytes} bytes", max_bytes=self.max_bytes)
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
                if received > self.max_bytes:
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
                await self._too_large()(scope, receive, send)
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


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): hand freed heap pages back to the system (a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


class DecodeBudget:
    """The bytes of decoded pixels in flight across all requests, at most `max_bytes`.

    A large image reserves its estimated decode memory before its pixels are decoded and waits up
    to `wait_s` for room, then is refused with 503 `overloaded`; an image larger than the whole
    budget decodes only when nothing else is. Small images (decoded on the event loop) do not take
    part. Once every reservation is returned after `trim_after_bytes` or more went through, freed
    heap memory is handed back to the system: without it a burst of huge images leaves the
    process gigabytes larger long after it has passed.
    """

    def __init__(
        self,
        max_bytes: int | None,
        wait_s: float = 2.0,
        trim_after_bytes: int = 64 * 1024 * 1024,
        release_memory: Callable[[], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.wait_s = wait_s
        self.trim_after_bytes = trim_after_bytes
        self._release_memory = release_memory or _malloc_trim()
        self._room = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.in_use = 0
        self.peak = 0
        self.refused = 0
        self.trims = 0
        self._since_trim = 0

    def _fits(self, nbytes: int) -> bool:
        assert self.max_bytes is not None
        return self.in_use + nbytes <= self.max_bytes or self.in_use == 0

    def _refusal(self, nbytes: int) -> Overloaded:
        assert self.max_bytes is not None
        self.refused += 1
        return Overloaded(
            f"too many large images are being decoded at once: this one needs about {nbytes >> 20} MiB of "
            f"the {self.max_bytes >> 20} MiB decode budget (MINDSCOPE_DECODE_BUDGET_BYTES) and none "
            f"came free within {self.wait_s:g} s; retry shortly, or send the image smaller",
            needed_bytes=nbytes,
            in_use_bytes=self.in_use,
            budget_bytes=self.max_bytes,
        )

    def _take(self, nbytes: int) -> None:
        self.in_use += nbytes
        self.peak = max(self.peak, self.in_use)

    def _give_back(self, nbytes: int) -> None:
        with self._room:
            self.in_use -= nbytes
            self._since_trim += nbytes
            trim = self.in_use == 0 and self._since_trim >= self.trim_after_bytes
            if trim:
                self._since_trim = 0
                self.trims += 1
            self._room.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_wake, waiter)
        if trim:
            self._release_memory()

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` of the budget for the duration (blocking: call it off the event loop)."""
        if self.max_bytes is None:
            yield
            return
        with self._room:
            if not self._room.wait_for(lambda: self._fits(nbytes), timeout=self.wait_s):
                raise self._refusal(nbytes)
            self._take(nbytes)
        try:
            yield
        finally:
            self._give_back(nbytes)

    @contextlib.asynccontextmanager
    async def reserve_async(self, nbytes: int) -> AsyncIterator[None]:
        """`reserve` for the event loop: the wait holds no thread."""
        if self.max_bytes is None:
            yield
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while True:
            with self._room:
                if self._fits(nbytes):
                    self._take(nbytes)
                    break
                if loop.time() >= deadline:
                    raise self._refusal(nbytes)
                waiter: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, waiter))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await waiter
        try:
            yield
        finally:
            self._give_back(nbytes)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


UNBOUNDED_DECODE = DecodeBudget(None)


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
