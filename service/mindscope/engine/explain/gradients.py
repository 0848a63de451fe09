"""Vanilla gradients (Simonyan et al. 2013) and gradient x input (Shrikumar et al. 2016): the
gradient of the target's score at the image, alone or times the image."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mindscope.engine.explain.explanation import NO_SMOOTHING, Explanation, Smoothing, smoothed
from mindscope.engine.explain.method import Context, Method, MethodParams, ModelPort, Sign
from mindscope.engine.explain.rows import GradientFn, gradient_rows, slices


def vanilla_gradients(
    gradient_fn: GradientFn,
    image: np.ndarray,
    target: int,
    smoothing: Smoothing = NO_SMOOTHING,
    internal_batch_size: int = 64,
    times_input: bool = False,
) -> Explanation:
    """d F[target] / d image, float32 (H, W, C); with `times_input`, that times the image."""

    def batched(images: np.ndarray) -> tuple[np.ndarray, int, int]:
        grads, _ = gradient_rows(gradient_fn, len(images), slices(images), target, internal_batch_size)
        return (grads * images if times_input else grads), len(images), 0

    name = "gradient-x-input" if times_input else "vanilla-gradients"
    return smoothed(name, image, target, smoothing, batched)


class VanillaGradients(Method):
    name = "vanilla-gradients"
    title = "Vanilla gradients"
    summary = "Vanilla gradients: d score / d pixel (SmoothGrad: samples)"
    Params = MethodParams
    sign: ClassVar[Sign] = "absolute"

    def rows(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        return 1

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        gradient_fn = port.gradients_for(context.score)
        return vanilla_gradients(gradient_fn, image, target, context.smoothing, context.caps.rows_per_chunk)


class GradientXInput(VanillaGradients):
    name = "gradient-x-input"
    title = "Gradient x input"
    summary = "Gradient x input: each pixel's gradient times its value"
    sign: ClassVar[Sign] = "all"

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        gradient_fn = port.gradients_for(context.score)
        return vanilla_gradients(gradient_fn, image, target, context.smoothing, context.caps.rows_per_chunk, True)
