"""The work of one request: a deadline for all of it, and cancellation when its client goes away.

The API sets a `RequestWork` in a context variable for each request (`api.limits.RequestLifetime`);
context variables follow the request into the worker thread that runs its route, so the engine
finds it with `current_work()` without it being passed through every call. The dynamic batcher
waits through `RequestWork.wait`, which bounds the wait by what is left of the deadline and stops
at once when the request is cancelled: rows still queued are withdrawn, and a loop of chunks (an
integrated-gradients request) ends at its next chunk instead of running to the end for nobody.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from mindscope.errors import DeadlineExceeded, RequestCancelled

T = TypeVar("T")


class RequestWork:
    def __init__(
        self, timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic, background: bool = False
    ) -> None:
        self.timeout_s = timeout_s
        # A job's work: the batchers run it in their background lane, after online requests.
        self.background = background
        self._clock = clock
        self._expires = None if timeout_s is None else clock() + timeout_s
        self._lock = threading.Lock()
        self._cancelled: str | None = None
        self._waiting: set[Future[Any]] = set()

    @property
    def cancelled(self) -> str | None:
        """Why the request was cancelled, or None while it is still wanted."""
        return self._cancelled

    def remaining(self) -> float | None:
        return None if self._expires is None else self._expires - self._clock()

    def cancel(self, reason: str) -> None:
        """Give up the request's work: queued rows are withdrawn, later calls raise `RequestCancelled`."""
        with self._lock:
            self._cancelled = self._cancelled or reason
            waiting = list(self._waiting)
        for future in waiting:
            future.cancel()  # only succeeds while still queued; a running batch finishes for its others

    def track(self, futures: list[Future[Any]]) -> None:
        """Work queued ahead of its wait (a whole path of chunks): cancelling the request withdraws
        all of it at once, before the batcher can start any more of it."""
        with self._lock:
            self._waiting.update(futures)
            cancelled = self._cancelled is not None
        if cancelled:
            for future in futures:
                future.cancel()

    def untrack(self, futures: list[Future[Any]]) -> None:
        with self._lock:
            self._waiting.difference_update(futures)

    def check(self) -> None:
        """Raise if the request was cancelled or its deadline has passed."""
        if self._cancelled is not None:
            raise RequestCancelled(f"request cancelled: {self._cancelled}")
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise self._deadline_exceeded()

    def wait(self, future: Future[T]) -> T:
        """The future's result, within the deadline; the future is cancelled if the request is.

        Callers `check()` before they queue the work behind `future`; a deadline already past here
        times out at once.
        """
        with self._lock:
            self._waiting.add(future)
        try:
            if self._cancelled is not None:
                future.cancel()
            return future.result(timeout=self.remaining())
        except FutureTimeout:
            future.cancel()  # still queued: the batcher skips it and its slot is free again
            raise self._deadline_exceeded() from None
        except CancelledError:
            raise RequestCancelled(f"request cancelled: {self._cancelled}") from None
        finally:
            with self._lock:
                self._waiting.discard(future)

    async def wait_async(self, future: Future[T]) -> T:
        """`wait` for coroutines: the event loop is free while the batcher works."""
        waiting = asyncio.wrap_future(future)
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            waiting.cancel()  # cancels `future` too: queued rows are dropped

        # A timer rather than asyncio.wait_for, which costs a task per call on the hot path.
        remaining = self.remaining()
        timer = None if remaining is None else asyncio.get_running_loop().call_later(max(remaining, 0), expire)
        with self._lock:
            self._waiting.add(future)
        try:
            if self._cancelled is not None:
                future.cancel()
            return await waiting
        except asyncio.CancelledError:
            future.cancel()
            if expired:
                raise self._deadline_exceeded() from None
            if self._cancelled is not None:
                raise RequestCancelled(f"request cancelled: {self._cancelled}") from None
            raise  # the task itself was cancelled
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._waiting.discard(future)

    def _deadline_exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the request took longer than {self.timeout_s} s; ask for less work (fewer steps) or retry later",
            timeout_s=self.timeout_s,
        )


_CURRENT: ContextVar[RequestWork | None] = ContextVar("mindscope_request_work", default=None)


def current_work() -> RequestWork:
    """The current request's work; outside a request (tests, benchmarks) work that never expires."""
    return _CURRENT.get() or RequestWork()


@contextmanager
def request_work(work: RequestWork) -> Iterator[RequestWork]:
    """Make `work` current in this context (and in the worker threads it starts) for the block."""
    token = _CURRENT.set(work)
    try:
        yield work
    finally:
        _CURRENT.reset(token)
