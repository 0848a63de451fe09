"""Whole explanations are priced at admission: from the batchers' measured speeds (set here, so the
test owns the clock), a chain's depth counts, booked work counts, and what cannot finish before its
deadline is refused at once with the advice to send it as a job."""

from __future__ import annotations

import time

import numpy as np
import pytest
from mindscope.engine.batching import BatchStats
from mindscope.engine.explain.admission import Admission, Cost
from mindscope.engine.explain.evaluation import Evaluate
from mindscope.engine.explain.explanation import Smoothing
from mindscope.engine.explain.method import Caps, Context
from mindscope.engine.explain.registry import method_named
from mindscope.engine.explain.runner import cost_of, explain
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import Overloaded

# A real-size model's speeds, roughly ResNet50 at 224x224 on 2 cores: 40 gradient rows/s on full
# batches, 0.12 s for a one-row call; 120 forward rows/s.
GRADIENTS = BatchStats(rows_per_s=40.0, small_call_s=0.12)
FORWARD = BatchStats(rows_per_s=120.0, small_call_s=0.05)


def test_a_chain_costs_its_depth_in_calls_and_a_batch_its_rows():
    guided = Cost(rows=200, depth=200, lane="gradients")
    assert guided.seconds(GRADIENTS, FORWARD) == pytest.approx(200 * 0.12)  # 200 one-row calls
    ig = Cost(rows=32, depth=1, lane="gradients", forward_rows=2 * 17)
    assert ig.seconds(GRADIENTS, FORWARD) == pytest.approx(32 / 40 + 34 / 120)
    sanity = Cost(rows=32, depth=1, lane="gradients", repeats=2)
    assert sanity.seconds(GRADIENTS, FORWARD) == pytest.approx(2 * 32 / 40)
    assert Cost(rows=32, depth=1, lane="gradients").seconds(BatchStats(), FORWARD) is None  # nothing measured


def test_three_guided_ig_at_once_one_runs_and_two_are_refused_at_once_with_the_way_out():
    admission = Admission()
    guided = Cost(rows=200, depth=200, lane="gradients").seconds(GRADIENTS, FORWARD)  # 24 s: fits 30 s alone
    refusals = []
    with admission.admit("guided-ig", guided, 30.0, "guided-ig"):
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(Overloaded) as refused, admission.admit("guided-ig", guided, 30.0, "guided-ig"):
                pass
            refusals.append((refused.value, time.monotonic() - started))
        assert admission.booked_s == pytest.approx(guided)
    assert admission.booked_s == 0
    for error, seconds in refusals:
        assert seconds < 1.0 and error.status_code == 503
        assert "Prefer: respond-async" in error.message and error.details["booked_s"] == pytest.approx(24.0)
        assert int(error.headers["Retry-After"]) == 24
    with admission.admit("guided-ig", guided, 30.0, "guided-ig"):  # the first ended: the next one fits again
        pass


def test_work_that_cannot_finish_alone_is_refused_and_a_job_is_never_refused():
    smooth_ig = Cost(rows=32 * 16, depth=1, lane="gradients").seconds(GRADIENTS, FORWARD)  # 12.8 s
    admission = Admission()
    with pytest.raises(Overloaded) as refused, admission.admit("ig", smooth_ig, 10.0, "ig"):
        pass
    assert "alone it would take that long" in refused.value.message
    with admission.admit("ig", smooth_ig, None, "a job's item"):  # no deadline: admitted
        assert admission.booked_s == 0


def test_the_runner_refuses_before_any_model_work_and_runs_jobs(committed_model):
    model = committed_model
    method = method_named("guided-ig")
    params = method.parse({"steps": 64})
    context = Context(smoothing=Smoothing(samples=2), caps=Caps())
    cost = cost_of(model, method, params, context, Evaluate(("deletion",), 16))
    assert (cost.rows, cost.depth, cost.forward_rows) == (128, 64, 17)
    saved = (model.gradient_batcher.stats.rows_per_s, model.gradient_batcher.stats.small_call_s)
    image = np.full((32, 32, 3), 0.5, np.float32)
    try:
        model.gradient_batcher.stats.rows_per_s, model.gradient_batcher.stats.small_call_s = 10.0, 0.5  # 64 x 0.5 s
        calls = model.gradient_batcher.stats.batches
        clock = lambda: 0.0  # noqa: E731  the deadline never moves: 30 s left
        with request_work(RequestWork(30.0, clock=clock)), pytest.raises(Overloaded) as refused:
            explain(model, method, image, params, context=context)
        assert model.gradient_batcher.stats.batches == calls and "respond-async" in refused.value.message
        with request_work(RequestWork(background=True)):  # a job's item: no deadline to miss
            small = method.parse({"steps": 4})
            assert explain(model, method, image, small).explanation.attributions.shape == (32, 32, 3)
    finally:
        model.gradient_batcher.stats.rows_per_s, model.gradient_batcher.stats.small_call_s = saved


def test_what_the_rows_leave_out_is_learned_from_requests_that_ran_alone():
    """XRAI's rows take 6 s but the request 9 s (its segmentation is no model row): after one request
    alone, the next is estimated at 9 s. A request beside another teaches nothing."""
    now = [0.0]
    admission = Admission(clock=lambda: now[0])
    with admission.admit("xrai", 6.0, 30.0, "xrai"):
        now[0] += 9.0
    assert admission.estimate("xrai", 6.0) == pytest.approx(9.0)
    with admission.admit("xrai", 6.0, 30.0, "xrai"):  # booked at 9 s
        assert admission.booked_s == pytest.approx(9.0)
        with admission.admit("xrai", 6.0, 30.0, "xrai"):
            now[0] += 30.0  # both slow, together: not a measure of either
    assert admission.estimate("xrai", 6.0) == pytest.approx(9.0)
    with pytest.raises(Overloaded) as refused, admission.admit("xrai", 20.0, 30.0, "xrai"):
        pass
    assert refused.value.details["estimate_s"] == pytest.approx(30.0)  # 20 s of rows x 1.5
