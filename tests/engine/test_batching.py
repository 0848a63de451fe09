import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from mindscope.engine.batching import BatchingConfig, DynamicBatcher
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import DeadlineExceeded, Overloaded, RequestCancelled


def slow_double(x, y):
    time.sleep(0.02)  # long enough for concurrent callers to queue up behind a running batch
    return x * 2, x.sum(axis=1) + y


def test_concurrent_callers_share_batches_and_get_their_own_rows():
    batcher = DynamicBatcher(slow_double, BatchingConfig(max_batch_rows=16))
    try:

        def call(i):
            rows = np.full((2, 3), float(i))
            doubled, summed = batcher.submit(rows, np.array([i, i]))
            return i, doubled, summed

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(48)))
        for i, doubled, summed in results:
            np.testing.assert_array_equal(doubled, np.full((2, 3), 2.0 * i))
            np.testing.assert_array_equal(summed, [4.0 * i, 4.0 * i])
        assert batcher.stats.rows == 96
        assert batcher.stats.batches < 48 and batcher.stats.largest <= 16
    finally:
        batcher.close()


def test_a_lone_request_runs_without_waiting():
    batcher = DynamicBatcher(lambda x: (x + 1,), BatchingConfig(max_batch_rows=64, max_delay_s=0.0))
    try:
        start = time.perf_counter()
        (out,) = batcher.submit(np.zeros((1, 2)))
        assert time.perf_counter() - start < 0.5 and out.tolist() == [[1.0, 1.0]]
    finally:
        batcher.close()


def test_failures_reach_every_caller_of_the_batch_and_the_batcher_survives():
    def fails_on_negative(x):
        if (x < 0).any():
            raise ValueError("negative rows")
        return (x,)

    batcher = DynamicBatcher(fails_on_negative, BatchingConfig())
    try:
        with pytest.raises(ValueError, match="negative"):
            batcher.submit(-np.ones((1, 1)))
        assert batcher.submit(np.ones((1, 1)))[0].tolist() == [[1.0]]
    finally:
        batcher.close()


def test_a_full_queue_is_refused_at_once():
    gate = threading.Event()
    batcher = DynamicBatcher(gated(gate), BatchingConfig(max_batch_rows=1, max_queue=2))
    pool = ThreadPoolExecutor(4)
    try:
        running = [pool.submit(batcher.submit, np.ones((1, 1))) for _ in range(3)]  # 1 running, 2 queued
        deadline = time.monotonic() + 5
        while batcher.depth < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.perf_counter()
        with pytest.raises(Overloaded):
            batcher.submit(np.ones((1, 1)))
        assert time.perf_counter() - start < 0.1
        gate.set()
        assert all(f.result(5)[0].shape == (1, 1) for f in running)
    finally:
        gate.set()
        pool.shutdown()
        batcher.close()


def test_callers_past_their_deadline_get_504_and_are_not_computed():
    gate = threading.Event()
    batcher = DynamicBatcher(gated(gate), BatchingConfig(max_batch_rows=1))
    pool = ThreadPoolExecutor(2)
    try:
        running = pool.submit(_within, RequestWork(0.1), batcher.submit, np.ones((1, 1)))  # holds the worker
        time.sleep(0.02)
        with pytest.raises(DeadlineExceeded) as caught:
            _within(RequestWork(0.1), batcher.submit, np.full((1, 1), 2.0))  # queued behind it, gives up
        assert caught.value.status_code == 504
        gate.set()
        with pytest.raises(DeadlineExceeded):
            running.result(5)  # the running caller also waited past 0.1 s
        assert batcher.submit(np.full((1, 1), 3.0))[0].tolist() == [[3.0]]  # outside a request: no deadline
        assert batcher.stats.rows == 2  # the abandoned row was skipped, never computed
    finally:
        gate.set()
        pool.shutdown()
        batcher.close()


def test_a_cancelled_request_withdraws_its_queued_rows():
    gate = threading.Event()
    batcher = DynamicBatcher(gated(gate), BatchingConfig(max_batch_rows=1))
    pool = ThreadPoolExecutor(2)
    work = RequestWork()
    try:
        running = pool.submit(batcher.submit, np.ones((1, 1)))  # holds the worker
        time.sleep(0.02)
        queued = pool.submit(_within, work, batcher.submit, np.full((1, 1), 2.0))
        time.sleep(0.02)
        work.cancel("client disconnected")
        with pytest.raises(RequestCancelled, match="client disconnected"):
            queued.result(1)  # returns at once, while the batch ahead of it is still running
        assert not running.done()
        with pytest.raises(RequestCancelled):
            _within(work, batcher.submit, np.ones((1, 1)))  # nothing more is queued for it
        gate.set()
        running.result(5)
        assert batcher.submit(np.full((1, 1), 3.0))[0].tolist() == [[3.0]]
        assert batcher.stats.rows == 2  # the cancelled row was never computed
    finally:
        gate.set()
        pool.shutdown()
        batcher.close()


def gated(gate: threading.Event):
    """An identity batch function that runs only once `gate` is set: it holds the batcher's worker."""

    def blocked(x):
        gate.wait(5)
        return (x,)

    return blocked


def _within(work, fn, *args):
    with request_work(work):
        return fn(*args)


def test_coroutine_callers_get_the_same_deadline_and_cancellation():
    gate = threading.Event()
    batcher = DynamicBatcher(gated(gate), BatchingConfig(max_batch_rows=1))
    pool = ThreadPoolExecutor(1)

    async def submit(work, value):
        with request_work(work):
            return await batcher.submit_async(np.full((1, 1), value))

    async def scenario():
        with pytest.raises(DeadlineExceeded):
            await submit(RequestWork(0.1), 2.0)  # queued behind the running batch, gives up
        work = RequestWork()
        queued = asyncio.create_task(submit(work, 3.0))
        await asyncio.sleep(0.02)
        work.cancel("client disconnected")
        with pytest.raises(RequestCancelled):
            await queued
        gate.set()
        return await submit(RequestWork(5), 4.0)

    try:
        running = pool.submit(batcher.submit, np.ones((1, 1)))  # holds the worker
        time.sleep(0.02)
        assert asyncio.run(scenario())[0].tolist() == [[4.0]]
        running.result(5)
        assert batcher.stats.rows == 2  # neither the late nor the cancelled row was computed
    finally:
        gate.set()
        pool.shutdown()
        batcher.close()
