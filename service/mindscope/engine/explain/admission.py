"""Admission of a whole explanation, priced before any of it runs.

The batchers admit calls one at a time; an explanation is many calls, and a chain of them (Guided
IG's 200 one-row steps, SHAP's partition batches) is admitted call by call, so three at once all
slow down together and all miss their deadline. Here a request's whole cost is estimated from what
the model's batchers measured (rows per second on full batches, seconds of a call of a few rows):

    seconds = rows / rate                      (rows queued at once)
            = depth * max(call of a few rows, rows per call / rate)   (a chain of `depth` calls)
            + the trust scores' forward rows / forward rate (and the method again for sanity)

times what requests of the same method measured against their estimate when they ran alone (what the
rows leave out: XRAI's segmentation, a chain's Python between steps), and every admitted request's
estimate stays booked on the model until it ends. A request whose
estimate, behind what is booked, does not fit its deadline (within `headroom`) is refused at once
with 503, a Retry-After, and the advice to send it as a job (`Prefer: respond-async`). Until the
batchers have measured anything, everything is admitted. Jobs (background work, no deadline) are
never refused here: they take the time requests leave.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mindscope.engine.batching import BatchStats
from mindscope.errors import Overloaded

HEADROOM = 0.9  # admit when the estimate fits this share of the time left


@dataclass(frozen=True)
class Cost:
    """What one explanation asks of the model."""

    rows: int  # model rows of the method (SmoothGrad's samples included)
    depth: int  # calls that run one after another
    lane: str  # "gradients" or "forward"
    forward_rows: int = 0  # trust scores' curves
    repeats: int = 1  # 2 with the sanity check (the method again, on the untrained model)

    def seconds(self, gradients: BatchStats, forward: BatchStats) -> float | None:
        stats = gradients if self.lane == "gradients" else forward
        rate = stats.rows_per_s
        if rate is None:
            return None
        if self.depth > 1:
            if stats.small_call_s is None:
                return None  # a chain's step not measured yet: no estimate to admit or learn by
            per_call = self.rows / self.depth
            method = self.depth * max(stats.small_call_s or 0.0, per_call / rate)
        else:
            method = self.rows / rate
        scores = 0.0 if not self.forward_rows or forward.rows_per_s is None else self.forward_rows / forward.rows_per_s
        return method * self.repeats + scores


class Admission:
    """The seconds of work admitted requests have booked on one model."""

    def __init__(self, headroom: float = HEADROOM, clock: Callable[[], float] = time.monotonic) -> None:
        self.headroom = headroom
        self.booked_s = 0.0
        self.refused = 0
        # Per method, measured seconds / estimated seconds of requests that ran alone: what the rows
        # leave out (XRAI's segmentation, a chain's first calls) corrects itself after a run or two.
        self.ratios: dict[str, float] = {}
        self._admitted = 0
        self._clock = clock
        self._lock = threading.Lock()

    def estimate(self, key: str, seconds: float | None) -> float | None:
        return None if seconds is None else seconds * self.ratios.get(key, 1.0)

    @contextmanager
    def admit(self, key: str, rows_s: float | None, remaining_s: float | None, what: str) -> Iterator[None]:
        """Book the estimate (`rows_s`, the seconds the rows alone take, times the method's measured
        ratio) for the block, or refuse at once when it does not fit `remaining_s`."""
        seconds = self.estimate(key, rows_s)
        if seconds is None or remaining_s is None or rows_s is None:
            yield
            return
        with self._lock:
            finish = self.booked_s + seconds
            if finish > remaining_s * self.headroom:
                self.refused += 1
                raise _refusal(what, seconds, self.booked_s, remaining_s)
            alone = self.booked_s == 0
            self.booked_s += seconds
            self._admitted += 1
            admitted = self._admitted
        started = self._clock()
        finished = False
        try:
            yield
            finished = True
        finally:
            took = self._clock() - started
            with self._lock:
                self.booked_s -= seconds
                if finished and alone and self._admitted == admitted and rows_s > 0:  # nothing ran beside it
                    ratio = took / rows_s
                    previous = self.ratios.get(key)
                    self.ratios[key] = ratio if previous is None else 0.5 * previous + 0.5 * ratio


def _refusal(what: str, seconds: float, booked_s: float, remaining_s: float) -> Overloaded:
    alone = seconds <= remaining_s * HEADROOM
    reason = (
        f"behind {booked_s:.1f} s of explanations already running it would end in about {booked_s + seconds:.1f} s"
        if alone
        else "alone it would take that long"
    )
    error = Overloaded(
        f"{what} would take about {seconds:.1f} s at the model's measured speed; {reason}, past this request's "
        f"deadline in {max(remaining_s, 0):.1f} s. Send it with the header 'Prefer: respond-async' to run it as a "
        "job (202, then GET /jobs/{id}), or ask for less work" + (", or retry later" if alone else ""),
        estimate_s=round(seconds, 3),
        booked_s=round(booked_s, 3),
        remaining_s=round(max(remaining_s, 0), 3),
        respond_async=True,
    )
    wait = booked_s if alone else seconds
    error.headers = {"Retry-After": str(max(1, math.ceil(wait)))}
    return error
