"""Dynamic batching: rows from concurrent callers run together in one compiled call.

Callers (worker threads serving requests) `submit` arrays whose first axis is rows; one
worker thread takes whatever is queued, up to `max_batch_rows`, optionally waiting up to
`max_delay_s` for more, runs the function once, and hands each caller its own rows back. With
`max_delay_s=0` a lone request runs at once, and under load requests pile up while the previous
batch runs, so batches fill without any added wait.

A request with many rows (an explanation's path) queues all of them at once, in order
(`submit_in_order`), so the queue serves requests in order of arrival and a batch holds rows of as
few requests as fill it: a burst finishes its first requests instead of slowing all of them down
together until every one misses its deadline.

Admission: a call is refused at once (`Overloaded`, with a Retry-After from the estimate) when the
queue is full, or when the rows queued ahead of it plus its own cannot be done well before its
request's deadline (within `admission_headroom` of the time left) at the rows per second this
batcher has measured, instead of failing with 504 after spending the model's time.

Two lanes: online calls (requests) and background calls (jobs, `RequestWork.background`). A
background call runs only when no online call waits and none arrived for `background_quiet_s`, and
a batch holds calls of one lane: a job takes the model's spare time, and a request arriving while
a job's batch runs waits for that one batch at most. Admission estimates count online rows only.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from mindscope import tracing
from mindscope.engine.work import current_work
from mindscope.errors import Overloaded

BatchFn = Callable[..., tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_rows: int = 64
    max_delay_s: float = 0.0
    max_queue: int = 256  # waiting submissions, not rows
    # Admit a call only if its estimate fits this fraction of the time its request has left: the
    # measured rate moves (other work on the cores), and a request admitted on a tight estimate
    # that then misses its deadline has cost the model its whole time for a 504.
    admission_headroom: float = 0.85
    # The share of the cores this lane may take while the lane it yields to (`yields_to`) has work:
    # after a call of d seconds it pauses d * (1 - share) / share. 1: never pauses.
    core_share: float = 1.0
    # A caller (a worker thread, never the event loop) whose rows fit one batch runs them in its own
    # thread when nothing is queued or running: there is nothing to batch with, and the hand-over
    # to the batcher's thread and back costs two thread wake-ups (ms on a loaded machine), which is
    # most of the time of a one-row gradient. Under load the lane is busy and rows queue as before.
    inline_when_idle: bool = False
    # Background (job) calls wait until no online call has arrived for this long: a client that sends
    # its next request a few ms after its last answer does not find a job's batch in its way.
    background_quiet_s: float = 0.02


# The defaults, in one place (Settings starts from these): a forward call of up to 64 images, a
# gradient call of up to 128 rows (two explanation chunks of 64).
FORWARD_BATCHING = BatchingConfig(max_batch_rows=64)
GRADIENT_BATCHING = BatchingConfig(max_batch_rows=128, inline_when_idle=True)


@dataclass
class _Pending:
    arrays: tuple[np.ndarray, ...]
    queued_at: float
    background: bool = False
    future: Future[tuple[np.ndarray, ...]] = field(default_factory=Future)
    traced: tuple[Any, int] | None = field(default_factory=tracing.capture)  # the request's span, when traced

    @property
    def rows(self) -> int:
        return len(self.arrays[0])


class OnlineActivity:
    """Online calls in flight at any of one model's batchers, and when the last one ended: a job's
    rows wait until none is in flight and none ended for the quiet time, on all of the model's lanes,
    since the lanes share the cores (a job's gradient batch slows a request's forward call as surely
    as a forward batch would). Measured from the end of a call, so the few ms a client takes to send
    its next request, or a request between its model calls, do not let a job's batch in."""

    def __init__(self) -> None:
        self.last = -math.inf
        self.in_flight = 0
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.last = time.monotonic()

    def end(self, *_: object) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last = time.monotonic()

    def quiet_in(self, quiet_s: float) -> float:
        """Seconds until quiet (0: quiet now); while a call is in flight, a while to look again."""
        if self.in_flight:
            return max(quiet_s, 0.005)
        return max(0.0, self.last + quiet_s - time.monotonic())


class _Lanes:
    """The batcher's queue: online calls first; background calls once no online call waits and none
    arrived for `quiet_s`. `get` raises `queue.Empty` when nothing it may take came in time."""

    def __init__(self, maxsize: int, quiet_s: float, activity: OnlineActivity) -> None:
        self.maxsize = maxsize
        self.quiet_s = quiet_s
        self.activity = activity
        self._online: deque[_Pending | None] = deque()
        self._background: deque[_Pending] = deque()
        self._ready = threading.Condition()

    def qsize(self) -> int:
        return len(self._online) + len(self._background)

    def quiet(self) -> bool:
        """No online call waits, and none arrived within the quiet time."""
        return not self._online and self.activity.quiet_in(self.quiet_s) == 0

    def put_nowait(self, item: _Pending) -> None:
        with self._ready:
            if self.qsize() >= self.maxsize:
                raise queue.Full
            self._add(item)

    def put(self, item: _Pending | None) -> None:
        with self._ready:
            self._add(item)

    def put_back(self, item: _Pending) -> None:
        """A background call taken but not run goes back to the front of its lane."""
        with self._ready:
            self._background.appendleft(item)
            self._ready.notify()

    def _add(self, item: _Pending | None) -> None:
        if item is not None and item.background:
            self._background.append(item)
        else:
            self._online.append(item)
            if item is not None:
                self.activity.begin()
                item.future.add_done_callback(self.activity.end)
        self._ready.notify()

    def drain(self) -> list[_Pending]:
        """Every call still queued, of both lanes, taken out."""
        with self._ready:
            taken = [item for item in self._online if item is not None] + list(self._background)
            self._online.clear()
            self._background.clear()
            return taken

    def get_nowait(self, lane: bool | None = None) -> _Pending | None:
        return self.get(0.0, lane)

    def get(self, timeout: float | None = None, lane: bool | None = None) -> _Pending | None:
        """The next call: of either lane (`lane` None), online only (False) or background only (True,
        and only while no online call waits)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while True:
                if self._online and lane is not True:
                    return self._online.popleft()
                if lane is True and self._online:
                    raise queue.Empty
                wait = None if deadline is None else deadline - time.monotonic()
                if self._background and lane is not False:
                    until_quiet = self.activity.quiet_in(self.quiet_s)
                    if until_quiet <= 0:
                        return self._background.popleft()
                    wait = until_quiet if wait is None else min(wait, until_quiet)
                if wait is not None and wait <= 0:
                    raise queue.Empty
                self._ready.wait(wait)


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0
    rejected: int = 0  # refused because the queue was full
    refused_for_deadline: int = 0  # refused because they could not finish in time
    queued_s: float = 0.0  # seconds calls spent queued, summed
    rows_per_s: float | None = None  # measured on batches at least half full; None until one ran
    # Seconds of a call of a few rows (at most _FEW_ROWS: a chain's step, Guided IG's one row), where
    # the call's fixed cost dominates; None until one ran.
    small_call_s: float | None = None
    paused_s: float = 0.0  # seconds paused to leave the cores to the lane this one yields to


# Weight of the newest half-full batch in the measured rows per second.
_RATE_WEIGHT = 0.2
_FEW_ROWS = 4


class DynamicBatcher:
    def __init__(
        self,
        fn: BatchFn,
        config: BatchingConfig,
        name: str = "batcher",
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        activity: OnlineActivity | None = None,
    ) -> None:
        self.fn = fn
        self._clock = clock
        self._sleep = sleep
        self.yields_to: DynamicBatcher | None = None  # the lane whose waiting work this one makes room for
        self._running = False
        self.config = config
        self.stats = BatchStats()
        self.activity = activity or OnlineActivity()
        self._queue = _Lanes(config.max_queue, config.background_quiet_s, self.activity)
        self._carry: _Pending | None = None
        self._lock = threading.Lock()
        self._calls = threading.Lock()  # one compiled call at a time, the batcher's or a caller's own
        self._holding = 0  # calls the batcher has taken and waits to run while a caller's own call runs
        self._waiting_rows = 0  # queued or running, not yet answered
        self._waiting_online = 0  # of them, online rows (what admission estimates count)
        self._few_row_calls = 0
        self._closed = False  # a closed lane runs late callers' rows in their own threads
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Calls waiting: queued, or taken by the batcher while a caller's own call runs."""
        return self._queue.qsize() + self._holding

    @property
    def busy(self) -> bool:
        """A call is running or waiting."""
        return self._running or self._queue.qsize() > 0

    def submit(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run `fn` on these rows (within a larger batch); blocks until the result is ready.

        The wait is bounded by the current request's deadline and ends when the request is
        cancelled (`engine.work`); rows of a caller that stopped waiting are never run.
        """
        work = current_work()
        work.check()
        inline = self._run_inline(arrays)
        if inline is not None:
            return inline
        futures = self._enqueue([arrays], work.remaining())
        if futures is None:
            return self._call_now(arrays)
        return work.wait(futures[0])

    def _run_inline(self, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...] | None:
        """Run a caller's rows in its own thread when the lane is idle: nothing queued or running,
        so there is nothing to batch with and the hand-over to the batcher's thread and back is
        pure cost (two thread wake-ups, ms on a loaded machine). None when the lane is busy; rows
        that arrive meanwhile queue and the batcher runs them after this call."""
        rows = len(arrays[0])
        if not self.config.inline_when_idle or rows > self.config.max_batch_rows:
            return None
        background = current_work().background
        if background and not self._queue.quiet():
            return None
        if not self._calls.acquire(blocking=False):
            return None
        if not background:
            self.activity.begin()
        try:
            with self._lock:
                if self._queue.qsize() or self._carry is not None or self._waiting_rows:
                    return None
                self._waiting_rows += rows
            self._running = True
            traced = tracing.capture()
            try:
                started, started_ns = self._clock(), time.time_ns()
                outputs = self.fn(*arrays)
                took = self._clock() - started
                if traced is not None:
                    tracing.record((traced[0], started_ns), started_ns, time.time_ns(), **_call_attributes(rows, 1))
            finally:
                self._running = False
                with self._lock:
                    self._waiting_rows -= rows
            self._measure(rows, took)
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.largest = max(self.stats.largest, rows)
        finally:
            self._calls.release()
            if not background:
                self.activity.end()
        self._make_room(took)
        return outputs

    async def submit_async(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """`submit` for coroutines: waits without holding a worker thread."""
        work = current_work()
        work.check()
        futures = self._enqueue([arrays], work.remaining())
        if futures is None:
            return await asyncio.to_thread(self._call_now, arrays)
        return await work.wait_async(futures[0])

    def submit_in_order(self, parts: Sequence[tuple[np.ndarray, ...]]) -> Iterator[tuple[np.ndarray, ...]]:
        """Queue every part at once, one after the other, then yield their results in order.

        Admitted or refused as a whole, before any of it runs. Leaving the iteration early (the
        request was cancelled or ran out of time) withdraws the parts that have not run yet.
        """
        work = current_work()
        work.check()
        if len(parts) == 1:
            inline = self._run_inline(parts[0])
            if inline is not None:
                yield inline
                return
        queued = self._enqueue(parts, work.remaining())
        if queued is None:
            for part in parts:
                work.check()
                yield self._call_now(part)
            return
        futures = queued
        work.track(futures)  # a cancelled request withdraws every part still queued, at once
        try:
            for future in futures:
                yield work.wait(future)
        finally:
            for future in futures:
                future.cancel()  # only those still queued: the batcher skips them
            work.untrack(futures)

    def estimate_s(self, rows: int) -> float | None:
        """Seconds until `rows` more would be done, behind what is queued, at the measured rate."""
        rate = self.stats.rows_per_s
        return None if rate is None else (self._waiting_online + rows) / rate

    def _enqueue(
        self, parts: Sequence[tuple[np.ndarray, ...]], remaining_s: float | None
    ) -> list[Future[tuple[np.ndarray, ...]]] | None:
        """The parts' futures, queued; None when the lane is closed (the caller runs them itself)."""
        background = current_work().background
        pendings = [_Pending(arrays, self._clock(), background) for arrays in parts]
        rows = sum(p.rows for p in pendings)
        with self._lock:
            if self._closed:
                return None
            if self.depth + len(pendings) > self.config.max_queue:
                self.stats.rejected += 1
                raise Overloaded(
                    "the service is at capacity; retry after a short wait", queue_limit=self.config.max_queue
                )
            estimate = self.estimate_s(rows)
            if (
                not background
                and remaining_s is not None
                and estimate is not None
                and estimate > remaining_s * self.config.admission_headroom
            ):
                self.stats.refused_for_deadline += 1
                raise _too_late(estimate, remaining_s, rows, self._waiting_online, self.stats.rows_per_s)
            for pending in pendings:
                self._queue.put_nowait(pending)
            self._waiting_rows += rows
            self._waiting_online += 0 if background else rows
        for pending in pendings:
            pending.future.add_done_callback(partial(self._answered, pending.rows, background))
        return [p.future for p in pendings]

    def _answered(self, rows: int, background: bool, _: Future[tuple[np.ndarray, ...]]) -> None:
        with self._lock:
            self._waiting_rows -= rows
            self._waiting_online -= 0 if background else rows

    def close(self, wait: bool = True) -> None:
        """Stop the lane's thread once the calls queued now have run; a caller that comes later
        (it held the model while it was unloaded) runs its rows in its own thread."""
        with self._lock:
            self._closed = True
        self._queue.put(None)
        if wait:
            self._thread.join(timeout=10)

    def _call_now(self, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        with self._calls:
            return self.fn(*arrays)

    def _drain(self) -> None:
        """Run what was queued behind the stop (a job's rows wait in the other lane), one call each."""
        left = ([self._carry] if self._carry is not None else []) + self._queue.drain()
        self._carry = None
        for pending in left:
            if not pending.future.set_running_or_notify_cancel():
                continue
            try:
                pending.future.set_result(self._call_now(pending.arrays))
            except BaseException as exc:
                pending.future.set_exception(exc)

    def _next(self) -> _Pending | None:
        """The next caller still waiting (cancelled ones are skipped), or None to stop."""
        while True:
            if self._carry is not None and self._carry.background and not self._queue.quiet():
                self._queue.put_back(self._carry)  # a request came in: it goes before the job's rest
                self._carry = None
            item, self._carry = (self._carry, None) if self._carry else (self._queue.get(), None)
            if item is None or item.future.set_running_or_notify_cancel():
                if item is not None:
                    self.stats.queued_s += self._clock() - item.queued_at
                return item

    def _collect(self, first: _Pending) -> list[_Pending]:
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self.config.max_delay_s
        while rows < self.config.max_batch_rows:
            remaining = deadline - time.monotonic()
            try:  # one lane per batch: a request never waits for a job's rows in its own call
                item = self._queue.get(max(remaining, 0.0), lane=first.background)
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
            self.stats.queued_s += self._clock() - item.queued_at
            batch.append(item)
            rows += item.rows
        return batch

    def _run(self) -> None:
        while True:
            first = self._next()
            if first is None:
                self._drain()
                return
            batch = self._collect(first)
            rows = sum(p.rows for p in batch)
            try:
                joined = [np.concatenate(parts) for parts in zip(*(p.arrays for p in batch), strict=True)]
                if not self._calls.acquire(blocking=False):
                    self._holding = len(batch)
                    self._calls.acquire()
                    self._holding = 0
                with _Held(self._calls):
                    started, started_ns = self._clock(), time.time_ns()
                    self._running = True
                    outputs = self.fn(*joined)
                    took = self._clock() - started
                ended_ns = time.time_ns()
                for pending in batch:
                    if pending.traced is not None:
                        attributes = _call_attributes(rows, len(batch), pending.rows)
                        tracing.record(pending.traced, started_ns, ended_ns, **attributes)
                self._measure(rows, took)
            except BaseException as exc:  # every waiting caller learns of the failure
                for pending in batch:
                    pending.future.set_exception(exc)
                continue
            finally:
                self._running = False
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.largest = max(self.stats.largest, rows)
            start = 0
            for pending in batch:
                end = start + pending.rows
                pending.future.set_result(tuple(out[start:end] for out in outputs))
                start = end
            self._make_room(took)

    def _make_room(self, took_s: float) -> None:
        """Pause after a call so the lane this one yields to gets the cores, while it has work."""
        share = self.config.core_share
        if share < 1 and self.yields_to is not None and self.yields_to.busy:
            self.stats.paused_s += took_s * (1 - share) / share
            self._sleep(took_s * (1 - share) / share)

    def _measure(self, rows: int, seconds: float) -> None:
        # A small batch costs more per row (the call's fixed cost); half-full ones say what a queue costs.
        if seconds <= 0:
            return
        if rows <= _FEW_ROWS:
            # The lane's first few-row call pays its warm-up (measured: 0.17 s where the next ones take
            # 0.12 s on ResNet50): it does not count.
            self._few_row_calls += 1
            previous = self.stats.small_call_s
            if self._few_row_calls > 1:
                self.stats.small_call_s = (
                    seconds if previous is None else (1 - _RATE_WEIGHT) * previous + _RATE_WEIGHT * seconds
                )
        if rows * 2 < self.config.max_batch_rows:
            return
        rate, previous = rows / seconds, self.stats.rows_per_s
        self.stats.rows_per_s = rate if previous is None else (1 - _RATE_WEIGHT) * previous + _RATE_WEIGHT * rate


class _Held:
    """Releases a lock already acquired, on leaving the block."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()


def _call_attributes(rows: int, callers: int, own: int | None = None) -> dict[str, int]:
    """A `model call` span's attributes: the batch's rows and callers, and this caller's rows."""
    return {"mindscope.batch.rows": rows, "mindscope.batch.callers": callers, "mindscope.rows": own or rows}


def _too_late(estimate_s: float, remaining_s: float, rows: int, waiting: int, rate: float | None) -> Overloaded:
    error = Overloaded(
        f"this request's {rows} rows, behind the {waiting} already waiting, would take about {estimate_s:.1f} s "
        f"at the measured {rate:.0f} rows/s, past its deadline in {max(remaining_s, 0):.1f} s; "
        "retry later or ask for less work (fewer steps)",
        estimate_s=round(estimate_s, 3),
        remaining_s=round(max(remaining_s, 0), 3),
        rows=rows,
        rows_waiting=waiting,
        rows_per_s=None if rate is None else round(rate, 1),
    )
    error.headers = {"Retry-After": str(max(1, math.ceil(estimate_s - max(remaining_s, 0))))}
    return error
