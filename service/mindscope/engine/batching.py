"""Dynamic batching: rows from concurrent callers run together in one compiled call.

Callers (worker threads serving requests) `submit` arrays whose first axis is rows; one
worker thread takes whatever is queued, up to `max_batch_rows`, optionally waiting up to
`max_delay_s` for more, runs the function once, and hands each caller its own rows back. With
`max_delay_s=0` a lone request runs at once, and under load requests pile up while the previous
batch runs, so batches fill without any added wait. The queue is bounded: when full, `submit`
raises `Overloaded` at once instead of letting latency grow without limit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from mindscope.engine.work import current_work
from mindscope.errors import Overloaded

BatchFn = Callable[..., tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_rows: int = 64
    max_delay_s: float = 0.0
    max_queue: int = 256  # waiting submissions, not rows


@dataclass
class _Pending:
    arrays: tuple[np.ndarray, ...]
    future: Future[tuple[np.ndarray, ...]] = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return len(self.arrays[0])


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0
    rejected: int = 0


class DynamicBatcher:
    def __init__(self, fn: BatchFn, config: BatchingConfig, name: str = "batcher") -> None:
        self.fn = fn
        self.config = config
        self.stats = BatchStats()
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=config.max_queue)
        self._carry: _Pending | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run `fn` on these rows (within a larger batch); blocks until the result is ready.

        The wait is bounded by the current request's deadline and ends when the request is
        cancelled (`engine.work`); rows of a caller that stopped waiting are never run.
        """
        work = current_work()
        work.check()
        return work.wait(self._enqueue(arrays))

    async def submit_async(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """`submit` for coroutines: waits without holding a worker thread."""
        work = current_work()
        work.check()
        return await work.wait_async(self._enqueue(arrays))

    def _enqueue(self, arrays: tuple[np.ndarray, ...]) -> Future[tuple[np.ndarray, ...]]:
        pending = _Pending(arrays)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self.stats.rejected += 1
            raise Overloaded(
                "the service is at capacity; retry after a short wait", queue_limit=self.config.max_queue
            ) from None
        return pending.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _next(self) -> _Pending | None:
        """The next caller still waiting (cancelled ones are skipped), or None to stop."""
        while True:
            item, self._carry = (self._carry, None) if self._carry else (self._queue.get(), None)
            if item is None or item.future.set_running_or_notify_cancel():
                return item

    def _collect(self, first: _Pending) -> list[_Pending]:
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self.config.max_delay_s
        while rows < self.config.max_batch_rows:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            if rows + item.rows > self.config.max_batch_rows:
                self._carry = item  # starts the next batch; never split a caller's rows
                break
            if not item.future.set_running_or_notify_cancel():
                continue
            batch.append(item)
            rows += item.rows
        return batch

    def _run(self) -> None:
        while True:
            first = self._next()
            if first is None:
                return
            batch = self._collect(first)
            try:
                joined = [np.concatenate(parts) for parts in zip(*(p.arrays for p in batch), strict=True)]
                outputs = self.fn(*joined)
            except BaseException as exc:  # every waiting caller learns of the failure
                for pending in batch:
                    pending.future.set_exception(exc)
                continue
            rows = sum(p.rows for p in batch)
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.largest = max(self.stats.largest, rows)
            start = 0
            for pending in batch:
                end = start + pending.rows
                pending.future.set_result(tuple(out[start:end] for out in outputs))
                start = end
