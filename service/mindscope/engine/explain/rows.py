"""Gradient rows for every explanation method: built in chunks, queued on the model's shared
gradient batcher, bounded by the request's deadline and cancelled with it.

A method describes the rows it needs (the points of an integration path, noisy copies of the
image, blurred copies, one row per SmoothGrad sample) with `make_rows(start, stop)`; only
`internal_batch_size` rows exist at a time, so memory stays bounded whatever the count. A
gradient function that can queue a whole sequence (`BatchedGradients.in_order`, the served model)
gets every chunk at once, so the batcher serves explanations in order of arrival and batches
their rows with those of concurrent requests; any other is called chunk by chunk. Either way a
request that was cancelled or ran out of time stops at its next chunk (`engine.work`) and the
chunks not yet run are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import closing

import numpy as np

from mindscope.engine.work import current_work

# (images float32 (N, H, W, C), targets int32 (N,)) -> (d F[target]/d image (N, H, W, C), F (N, K)), where
# F is the score explained: the class probabilities, or the logits.
GradientFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
RowsFn = Callable[[int, int], np.ndarray]  # (start, stop) -> float32 rows start..stop-1


def slices(rows: np.ndarray) -> RowsFn:
    """The rows of an array already made."""
    return lambda start, stop: rows[start:stop]


def gradient_rows(
    gradient_fn: GradientFn,
    count: int,
    make_rows: RowsFn,
    target: int,
    internal_batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(gradients float32 (count, H, W, C), scores (count, K)) of the target at each row."""
    first = make_rows(0, min(internal_batch_size, count))
    grads = np.empty((count, *first.shape[1:]), np.float32)
    scores: list[np.ndarray] = []
    starts = range(0, count, internal_batch_size)
    targets = np.full(min(internal_batch_size, count), target, np.int32)

    def chunk(start: int) -> tuple[np.ndarray, np.ndarray]:
        rows = first if start == 0 else make_rows(start, min(start + internal_batch_size, count))
        return np.asarray(rows, np.float32), targets[: len(rows)]

    in_order = getattr(gradient_fn, "in_order", None)
    chunks = (chunk(start) for start in starts)
    results = in_order(list(chunks)) if in_order is not None else _one_by_one(gradient_fn, chunks)
    with closing(results):  # leaving early withdraws what has not run
        for start, (chunk_grads, chunk_scores) in zip(starts, results, strict=True):
            grads[start : start + len(chunk_grads)] = chunk_grads
            scores.append(chunk_scores)
    return grads, np.concatenate(scores)


def _one_by_one(
    gradient_fn: GradientFn, chunks: Iterator[tuple[np.ndarray, np.ndarray]]
) -> Generator[tuple[np.ndarray, np.ndarray]]:
    work = current_work()
    for images, targets in chunks:
        work.check()
        yield gradient_fn(images, targets)
