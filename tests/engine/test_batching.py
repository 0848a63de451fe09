import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from mindscope.engine.batching import BatchingConfig, DynamicBatcher
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import DeadlineExceeded, Overloaded, RequestCancelled


def test_concurrent_callers_share_batches_and_get_their_own_rows():
    gate = Gate()

    def double(x, y):
        gate.identity(x)  # the first batch waits until the others have queued up behind it
        return x * 2, x.sum(axis=1) + y

    batcher = DynamicBatcher(double, BatchingConfig(max_batch_rows=16))
    try:

        def call(i):
            rows = np.full((2, 3), float(i))
            doubled, summed = batcher.submit(rows, np.array([i, i]))
            return i, doubled, summed

        with ThreadPoolExecutor(16) as pool:
            first = pool.submit(call, 0)
            gate.wait_entered(1)
            rest = [pool.submit(call, i) for i in range(1, 48)]
            wait_until(lambda: batcher.depth == 15)  # the pool's other 15 threads wait in the queue
            gate.open()
            results = [first.result(60)] + [f.result(60) for f in rest]
        for i, doubled, summed in results:
            np.testing.assert_array_equal(doubled, np.full((2, 3), 2.0 * i))
            np.testing.assert_array_equal(summed, [4.0 * i, 4.0 * i])
        assert batcher.stats.rows == 96
        assert batcher.stats.batches < 48 and batcher.stats.largest <= 16
    finally:
        batcher.close()


def test_a_lone_request_runs_without_waiting_for_the_batch_to_fill():
    batcher = DynamicBatcher(lambda x: (x + 1,), BatchingConfig(max_batch_rows=64, max_delay_s=0.0))
    try:
        with ThreadPoolExecutor(1) as pool:
            # Nobody else ever calls: with a delay of 0 the one row runs alone instead of waiting for 63 more.
            (out,) = pool.submit(batcher.submit, np.zeros((1, 2))).result(timeout=60)
        assert out.tolist() == [[1.0, 1.0]]
        assert (batcher.stats.batches, batcher.stats.rows) == (1, 1)
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
    gate = Gate()
    batcher = DynamicBatcher(gate.identity, BatchingConfig(max_batch_rows=1, max_queue=2))
    pool = ThreadPoolExecutor(4)
    try:
        running = [pool.submit(batcher.submit, np.ones((1, 1)))]
        gate.wait_entered(1)  # the worker holds the first row and takes nothing more until the gate opens
        running += [pool.submit(batcher.submit, np.ones((1, 1))) for _ in range(2)]
        wait_until(lambda: batcher.depth == 2)
        # The model is held busy, so a caller that blocked would never return: refusing is the only way out.
        refused = pool.submit(batcher.submit, np.ones((1, 1)))
        with pytest.raises(Overloaded):
            refused.result(timeout=60)
        assert batcher.stats.rejected == 1
        gate.open()
        assert all(f.result(60)[0].shape == (1, 1) for f in running)
        assert batcher.depth == 0 and batcher.stats.rows == 3
        assert batcher.submit(np.ones((1, 1)))[0].shape == (1, 1)  # room again once the queue drained
    finally:
        gate.open()
        pool.shutdown()
        batcher.close()


def test_callers_past_their_deadline_get_504_and_are_not_computed():
    """The requests' clock is the test's and stands still, so however slowly the pool's thread starts,
    its caller reaches the gate with its 0.1 s intact; each caller then waits 0.1 s for its row."""
    gate = Gate()
    batcher = DynamicBatcher(gate.identity, BatchingConfig(max_batch_rows=1))
    pool = ThreadPoolExecutor(2)
    clock = lambda: 0.0  # noqa: E731
    try:
        running = pool.submit(_within, RequestWork(0.1, clock=clock), batcher.submit, np.ones((1, 1)))
        gate.wait_entered(1)  # holds the worker
        with pytest.raises(DeadlineExceeded) as caught:
            _within(RequestWork(0.1, clock=clock), batcher.submit, np.full((1, 1), 2.0))  # queued behind, gives up
        assert caught.value.status_code == 504
        gate.open()
        with pytest.raises(DeadlineExceeded):
            running.result(5)  # the running caller also waited past 0.1 s
        assert batcher.submit(np.full((1, 1), 3.0))[0].tolist() == [[3.0]]  # outside a request: no deadline
        assert batcher.stats.rows == 2  # the abandoned row was skipped, never computed
    finally:
        gate.open()
        pool.shutdown()
        batcher.close()


def test_a_cancelled_request_withdraws_its_queued_rows():
    gate = Gate()
    batcher = DynamicBatcher(gate.identity, BatchingConfig(max_batch_rows=1))
    pool = ThreadPoolExecutor(2)
    work = RequestWork()
    try:
        running = pool.submit(batcher.submit, np.ones((1, 1)))
        gate.wait_entered(1)  # holds the worker
        queued = pool.submit(_within, work, batcher.submit, np.full((1, 1), 2.0))
        wait_until(lambda: batcher.depth == 1)
        work.cancel("client disconnected")
        with pytest.raises(RequestCancelled, match="client disconnected"):
            queued.result(1)  # returns at once, while the batch ahead of it is still running
        assert not running.done()
        with pytest.raises(RequestCancelled):
            _within(work, batcher.submit, np.ones((1, 1)))  # nothing more is queued for it
        gate.open()
        running.result(60)
        assert batcher.submit(np.full((1, 1), 3.0))[0].tolist() == [[3.0]]
        assert batcher.stats.rows == 2  # the cancelled row was never computed
    finally:
        gate.open()
        pool.shutdown()
        batcher.close()


class Gate:
    """An identity batch function that holds the batcher's worker until the test opens the gate."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._entered = threading.Semaphore(0)

    def identity(self, x):
        self._entered.release()
        assert self._open.wait(120), "the test never opened the gate"
        return (x,)

    def wait_entered(self, calls: int) -> None:
        for _ in range(calls):
            assert self._entered.acquire(timeout=60), "the batch function was never called"

    def open(self) -> None:
        self._open.set()


def wait_until(condition, timeout: float = 60.0) -> None:
    """Poll for a state the code under test reaches by itself; the timeout only ends a hung test."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never reached"
        time.sleep(0.005)


def _within(work, fn, *args):
    with request_work(work):
        return fn(*args)


def test_coroutine_callers_get_the_same_deadline_and_cancellation():
    gate = Gate()
    batcher = DynamicBatcher(gate.identity, BatchingConfig(max_batch_rows=1))
    pool = ThreadPoolExecutor(1)

    async def submit(work, value):
        with request_work(work):
            return await batcher.submit_async(np.full((1, 1), value))

    async def scenario():
        with pytest.raises(DeadlineExceeded):
            await submit(RequestWork(0.1, clock=lambda: 0.0), 2.0)  # queued behind the running batch, gives up
        work = RequestWork()
        queued = asyncio.create_task(submit(work, 3.0))
        while batcher.depth < 1:
            await asyncio.sleep(0.005)
        work.cancel("client disconnected")
        with pytest.raises(RequestCancelled):
            await queued
        gate.open()
        return await submit(RequestWork(60), 4.0)

    try:
        running = pool.submit(batcher.submit, np.ones((1, 1)))
        gate.wait_entered(1)  # holds the worker
        assert asyncio.run(scenario())[0].tolist() == [[4.0]]
        running.result(60)
        assert batcher.stats.rows == 2  # neither the late nor the cancelled row was computed
    finally:
        gate.open()
        pool.shutdown()
        batcher.close()


def test_a_burst_is_served_in_order_of_arrival():
    """Each request queues its whole path at once: the batches finish the first request before the
    second, instead of giving every request a slice of each batch."""
    gate = Gate()
    order: list[int] = []

    def record(x):
        gate.identity(x)
        order.extend(int(v) for v in x[:, 0])
        return (x,)

    batcher = DynamicBatcher(record, BatchingConfig(max_batch_rows=4))
    finished: list[int] = []

    def explain(request: int) -> None:
        parts = [(np.full((2, 1), float(request)),) for _ in range(4)]  # 8 rows in 4 parts
        for _ in batcher.submit_in_order(parts):
            pass
        finished.append(request)

    pool = ThreadPoolExecutor(4)
    try:
        blocker = pool.submit(batcher.submit, np.full((4, 1), -1.0))  # a full batch holds the model
        gate.wait_entered(1)
        requests = []
        for request in range(3):  # each arrives while the model is busy and queues its 4 parts
            requests.append(pool.submit(explain, request))
            wait_until(lambda request=request: batcher.depth == 4 * (request + 1))
        gate.open()
        for future in (blocker, *requests):
            future.result(60)
    finally:
        gate.open()
        pool.shutdown()
        batcher.close()
    assert order == [-1] * 4 + [0] * 8 + [1] * 8 + [2] * 8 and sorted(finished) == [0, 1, 2]


def test_work_that_cannot_meet_its_deadline_is_refused_at_once_with_the_estimate():
    """The batcher's clock is the test's: each batch of 4 rows takes one second of it, so the
    measured rate is 4 rows/s whatever this machine's speed."""
    now = [0.0]

    def one_second_per_batch(x):
        now[0] += 1.0
        return (x,)

    clock = lambda: now[0]  # noqa: E731
    batcher = DynamicBatcher(one_second_per_batch, BatchingConfig(max_batch_rows=4), clock=clock)
    try:
        assert batcher.estimate_s(8) is None  # nothing measured yet: everything is admitted
        with request_work(RequestWork(timeout_s=60, clock=clock)):
            list(batcher.submit_in_order([(np.ones((4, 1)),), (np.ones((4, 1)),)]))
        assert batcher.stats.rows_per_s == pytest.approx(4.0)
        assert batcher.estimate_s(8) == pytest.approx(2.0)
        with request_work(RequestWork(timeout_s=10, clock=clock)):
            assert len(list(batcher.submit_in_order([(np.ones((4, 1)),)] * 2))) == 2  # 2 s of work, 10 s left
            with pytest.raises(Overloaded) as refused:
                next(batcher.submit_in_order([(np.ones((4, 1)),)] * 25))  # 100 rows: 25 s of work
            # 7 s of work with 8 s left would just fit, if the rate never moved: too tight to admit.
            with pytest.raises(Overloaded):
                next(batcher.submit_in_order([(np.ones((4, 1)),)] * 7))
            assert len(list(batcher.submit_in_order([(np.ones((4, 1)),)] * 6))) == 6  # 6 s: admitted
        error = refused.value
        assert error.status_code == 503 and error.details["estimate_s"] == pytest.approx(25.0)
        assert error.details["rows_per_s"] == pytest.approx(4.0) and int(error.headers["Retry-After"]) >= 15
        assert batcher.stats.refused_for_deadline == 2 and batcher.depth == 0  # nothing of them was queued
    finally:
        batcher.close()


def test_a_lane_with_a_core_share_pauses_only_while_the_other_lane_has_work():
    """A call 'takes' 1 s of the test's clock; with a share of 0.25 the lane then pauses 3 s, but
    only while the lane it yields to is busy. Pauses are recorded, not slept."""
    now, pauses = [0.0], []

    def one_second(x):
        now[0] += 1.0
        return (x,)

    class OtherLane:
        busy = True

    batcher = DynamicBatcher(
        one_second, BatchingConfig(max_batch_rows=4, core_share=0.25), clock=lambda: now[0], sleep=pauses.append
    )
    try:
        batcher.yields_to = OtherLane()  # type: ignore[assignment]
        batcher.submit(np.ones((4, 1)))
        wait_until(lambda: len(pauses) == 1)
        OtherLane.busy = False
        batcher.submit(np.ones((4, 1)))
        batcher.submit(np.ones((4, 1)))  # answered only after the second call's (absent) pause
        assert pauses == [pytest.approx(3.0)] and batcher.stats.paused_s == pytest.approx(3.0)
    finally:
        batcher.close()


def test_an_idle_lane_runs_a_lone_caller_in_its_own_thread_and_a_busy_one_queues():
    gate = Gate()
    threads: list[str] = []

    def record(x):
        threads.append(threading.current_thread().name)
        if x[0, 0] < 0:
            gate.identity(x)
        return (x,)

    batcher = DynamicBatcher(record, BatchingConfig(max_batch_rows=8, inline_when_idle=True), name="lane")
    pool = ThreadPoolExecutor(2, thread_name_prefix="caller")
    try:
        assert batcher.submit(np.ones((2, 1)))[0].shape == (2, 1)
        assert threads == ["MainThread"]  # nothing to batch with: no hand-over to the lane's thread
        assert list(batcher.submit_in_order([(np.ones((3, 1)),)]))[0][0].shape == (3, 1)
        assert threads[-1] == "MainThread"
        holder = pool.submit(batcher.submit, np.full((1, 1), -1.0))  # runs in its caller, held there
        gate.wait_entered(1)
        queued = pool.submit(batcher.submit, np.ones((1, 1)))  # the lane is busy: this one queues
        wait_until(lambda: batcher.depth == 1)
        gate.open()
        holder.result(60), queued.result(60)
        assert threads[2].startswith("caller") and threads[3] == "lane"
        assert batcher.stats.rows == 7 and batcher.stats.batches == 4
        too_big = batcher.submit(np.ones((9, 1)))  # more rows than a batch: always through the lane
        assert too_big[0].shape == (9, 1) and threads[-1] == "lane"
    finally:
        gate.open()
        pool.shutdown()
        batcher.close()


def test_a_jobs_calls_wait_behind_online_calls_and_never_share_their_batch():
    """Background calls (a job's) queued before online ones still run after them, in batches of their
    own; admission estimates for requests count only online rows."""
    gate = Gate()
    batches: list[list[float]] = []

    def record(x):
        gate.identity(x)
        batches.append(sorted({float(v) for v in x[:, 0]}))
        return (x,)

    config = BatchingConfig(max_batch_rows=8, background_quiet_s=0.0)
    batcher = DynamicBatcher(record, config)
    pool = ThreadPoolExecutor(5)
    job = RequestWork(background=True)
    try:
        blocker = pool.submit(batcher.submit, np.full((8, 1), -1.0))
        gate.wait_entered(1)
        queued_job = [pool.submit(_within, job, batcher.submit, np.full((2, 1), 1.0)) for _ in range(2)]
        wait_until(lambda: batcher.depth == 2)
        online = [pool.submit(batcher.submit, np.full((2, 1), 0.0)) for _ in range(2)]
        wait_until(lambda: batcher.depth == 4)
        batcher.stats.rows_per_s = 1.0
        # 8 running + 4 queued online rows + 1: the job's 4 queued rows are not in a request's way
        assert batcher.estimate_s(1) == pytest.approx(13.0)
        gate.open()
        for future in (blocker, *queued_job, *online):
            future.result(60)
    finally:
        gate.open()
        pool.shutdown()
        batcher.close()
    assert batches == [[-1.0], [0.0], [1.0]]


def test_a_job_waits_for_a_quiet_moment_after_the_last_request():
    batcher = DynamicBatcher(lambda x: (x,), BatchingConfig(max_batch_rows=8, background_quiet_s=0.3))
    try:
        started = time.monotonic()
        batcher.submit(np.ones((1, 1)))  # an online request: the job must now wait 0.3 s
        with request_work(RequestWork(background=True)):
            batcher.submit(np.ones((1, 1)))
        assert time.monotonic() - started >= 0.3
    finally:
        batcher.close()


def test_a_request_on_one_lane_holds_a_job_back_on_the_models_other_lanes():
    from mindscope.engine.batching import OnlineActivity

    activity = OnlineActivity()
    config = BatchingConfig(max_batch_rows=8, background_quiet_s=0.3, inline_when_idle=True)
    forward = DynamicBatcher(lambda x: (x,), config, activity=activity)
    gradients = DynamicBatcher(lambda x: (x,), config, activity=activity)
    try:
        started = time.monotonic()
        forward.submit(np.ones((1, 1)))  # a request on the forward lane (run inline: it counts too)
        with request_work(RequestWork(background=True)):
            gradients.submit(np.ones((1, 1)))
        assert time.monotonic() - started >= 0.3
    finally:
        forward.close()
        gradients.close()


def test_a_job_waits_while_a_request_is_still_being_computed_on_another_lane():
    from mindscope.engine.batching import OnlineActivity

    gate = Gate()
    activity = OnlineActivity()
    config = BatchingConfig(max_batch_rows=8, background_quiet_s=0.0)
    forward = DynamicBatcher(gate.identity, config, activity=activity)
    gradients = DynamicBatcher(lambda x: (x,), config, activity=activity)
    pool = ThreadPoolExecutor(2)
    try:
        request = pool.submit(forward.submit, np.ones((1, 1)))
        gate.wait_entered(1)  # the request's call is running
        job = pool.submit(_within, RequestWork(background=True), gradients.submit, np.ones((1, 1)))
        time.sleep(0.2)
        assert not job.done() and activity.in_flight == 1
        gate.open()
        request.result(60)
        job.result(60)
        assert activity.in_flight == 0
    finally:
        gate.open()
        pool.shutdown()
        forward.close()
        gradients.close()


def test_a_closed_lane_finishes_what_was_queued_and_serves_late_callers_in_their_own_threads():
    """An unloaded model's lanes close while requests still hold the model: none of them hangs."""
    gate = Gate()
    batcher = DynamicBatcher(lambda x: (gate.identity(x)[0] * 3,), BatchingConfig(max_batch_rows=1))
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.submit, np.ones((1, 2)))
        gate.wait_entered(1)
        queued = pool.submit(batcher.submit, np.full((1, 2), 2.0))  # waits behind the first call
        wait_until(lambda: batcher.depth == 1)
        closing = pool.submit(batcher.close)
        gate.open()
        assert first.result(60)[0].tolist() == [[3.0, 3.0]]
        assert queued.result(60)[0].tolist() == [[6.0, 6.0]]
        closing.result(60)
    # After the close: in the caller's thread, through every way of submitting.
    caller = threading.get_ident()
    seen = []
    batcher.fn = lambda x: (seen.append(threading.get_ident()) or x * 3,)
    assert batcher.submit(np.ones((1, 2)))[0].tolist() == [[3.0, 3.0]]
    assert [out[0].tolist() for out in batcher.submit_in_order([(np.ones((1, 1)),), (np.zeros((1, 1)),)])] == [
        [[3.0]],
        [[0.0]],
    ]
    assert asyncio.run(batcher.submit_async(np.full((1, 1), 2.0)))[0].tolist() == [[6.0]]
    assert seen[:3] == [caller, caller, caller] and len(seen) == 4
