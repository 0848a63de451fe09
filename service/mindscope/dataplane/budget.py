"""The memory decoding may take across every request in flight: a large image reserves its decode
memory first and waits (bounded) for room, so a burst of large images cannot exhaust the process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from mindscope.errors import Overloaded


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
