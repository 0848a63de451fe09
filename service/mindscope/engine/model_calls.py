"""How requests call a loaded model: compiled functions called through their concrete function,
and the gradient calls that queue rows on the model's shared gradient batcher."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, cast

import numpy as np
import tensorflow as tf

from mindscope.engine.batching import DynamicBatcher


class BatchedGradients:
    """d score[target] / d image per row, batched with the rows of concurrent explanations.

    The score is the target class's probability, or its logit (the pre-softmax score) with
    `score="logit"`. Call it with (images float32 (N, H, W, C), targets int32 (N,)) for (gradients
    like images, scores (N, classes)); `in_order` queues a whole path of such parts at once and
    yields their results in order (`DynamicBatcher.submit_in_order`). Rows of both scores share
    batches: each row carries which one it differentiates.
    """

    def __init__(self, batcher: DynamicBatcher, score: str = "probability") -> None:
        self.batcher = batcher
        self.score = score
        self._on_logit = np.int32(score == "logit")

    def __call__(self, images: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grads, scores = self.batcher.submit(*self._row_arrays(images, targets))
        return grads, scores

    def in_order(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> Generator[tuple[np.ndarray, np.ndarray]]:
        typed = [self._row_arrays(images, targets) for images, targets in parts]
        return cast(Generator[tuple[np.ndarray, np.ndarray]], self.batcher.submit_in_order(typed))

    def _row_arrays(self, images: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        targets = np.asarray(targets, np.int32)
        return np.asarray(images, np.float32), targets, np.full(len(targets), self._on_logit, np.int32)


class BatchedLayerGradients:
    """A layer's activations and the gradient of the target's score with respect to them, per row
    (`LoadedModel.layer_gradients`)."""

    def __init__(self, batcher: DynamicBatcher, score: str) -> None:
        self.batcher = batcher
        self._on_logit = np.int32(score == "logit")

    def __call__(self, images: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        targets = np.asarray(targets, np.int32)
        flags = np.full(len(targets), self._on_logit, np.int32)
        activations, grads, scores = self.batcher.submit(np.asarray(images, np.float32), targets, flags)
        return activations, grads, scores


class Compiled:
    """A function compiled by tf.function for one input signature, called through its concrete
    function: the same graph, without tf.function's matching of each call's arguments against its
    signatures (half a millisecond of a one-image call here). Traced on first use."""

    def __init__(self, fn: Any, signature: list[tf.TensorSpec]) -> None:
        self._function = tf.function(fn, input_signature=signature)
        self._concrete: Any = None

    def __call__(self, *args: tf.Tensor) -> Any:
        concrete = self._concrete
        if concrete is None:  # two threads may both trace it once: the same graph either way
            concrete = self._concrete = self._function.get_concrete_function()
        return concrete(*args)
