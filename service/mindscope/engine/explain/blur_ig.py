"""Blur integrated gradients (Xu et al. 2020): integrated gradients along the path from an ever
more blurred image (Gaussian, sigma up to `max_sigma` pixels) back to the image itself.

    BlurIG(x) = - sum_i (sigma_{i+1} - sigma_i) * d blur(x, sigma_i) / d sigma * dF/dx(blur(x, sigma_i))

with sigma_i = i * max_sigma / steps (or its square root, `sqrt`), the blur's derivative in sigma
taken by a forward difference of `grad_step`, as the paper's and PAIR saliency's implementations do.
The blurred images are the rows of one gradient sequence; edges blur against zeros.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from pydantic import Field

from mindscope.engine.explain.explanation import NO_SMOOTHING, Explanation, Smoothing, smoothed
from mindscope.engine.explain.method import Context, MethodParams, ModelPort, PathMethod, steps_field
from mindscope.engine.explain.rows import GradientFn, gradient_rows


@functools.lru_cache(maxsize=2048)  # a path's levels repeat across requests with its parameters
def blur_matrix(size: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The 1-D Gaussian blur of scipy.ndimage.gaussian_filter1d (kernel cut at `truncate` sigmas,
    zeros beyond the edges) of a length-`size` signal, as a float64 (size, size) matrix (read-only)."""
    radius = int(truncate * sigma + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    weights /= weights.sum()
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    inside = np.abs(offsets) <= radius
    matrix = np.where(inside, weights[np.clip(offsets + radius, 0, 2 * radius)], 0.0)
    matrix.flags.writeable = False
    return matrix


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (H, W, C) over height and width, zeros beyond the edges: what
    `ndimage.gaussian_filter(image, [sigma, sigma, 0], mode="constant")` computes, as two small
    matrix products. The filter's cost grows with the kernel (8 sigma + 1 taps, 401 at the default
    largest sigma of 50, on a 32-pixel side), the products' does not."""
    if sigma == 0:
        return image
    height, width = image.shape[:2]
    columns = np.tensordot(image.astype(np.float64), blur_matrix(width, sigma), axes=([1], [1]))  # (H, C, W)
    rows = np.tensordot(blur_matrix(height, sigma), columns, axes=([1], [0]))  # (H, C, W)
    return rows.transpose(0, 2, 1).astype(np.float32)


def sigmas(max_sigma: float, steps: int, sqrt: bool) -> np.ndarray:
    """The blur levels 0 .. max_sigma, evenly spaced, or their square roots spaced evenly (`sqrt`)."""
    values = [float(i) * max_sigma / steps for i in range(steps + 1)]
    return np.asarray([math.sqrt(v) for v in values] if sqrt else values)


def blur_integrated_gradients(
    gradient_fn: GradientFn,
    image: np.ndarray,
    target: int,
    steps: int = 100,
    max_sigma: float = 50.0,
    grad_step: float = 0.01,
    sqrt: bool = False,
    smoothing: Smoothing = NO_SMOOTHING,
    internal_batch_size: int = 64,
) -> Explanation:
    levels = sigmas(max_sigma, steps, sqrt)
    widths = np.diff(levels)

    def batched(images: np.ndarray) -> tuple[np.ndarray, int, int]:
        total = len(images) * steps
        # d blur / d sigma of each row, kept beside it: two blurs a row, as the reference does.
        derivatives = np.empty((total, *images.shape[1:]), np.float32)

        def rows(start: int, stop: int) -> np.ndarray:
            out = np.empty((stop - start, *images.shape[1:]), np.float32)
            for r in range(start, stop):
                sample, i = divmod(r, steps)
                out[r - start] = blur(images[sample], levels[i])
                derivatives[r] = (blur(images[sample], levels[i] + grad_step) - out[r - start]) / grad_step
            return out

        grads, _ = gradient_rows(gradient_fn, total, rows, target, internal_batch_size)
        weighted = (widths[np.arange(total) % steps, None, None, None] * derivatives * grads).astype(np.float64)
        out = weighted.reshape(len(images), steps, *images.shape[1:]).sum(axis=1)
        return (-out).astype(np.float32), total, 0

    details = {"steps": steps, "max_sigma": max_sigma, "grad_step": grad_step, "sqrt": sqrt}
    return smoothed("blur-ig", image, target, smoothing, batched, details)


class BlurIGParams(MethodParams):
    steps: int | None = steps_field(100)
    max_sigma: float = Field(50.0, gt=0, le=100, description="the strongest blur, in pixels")
    sqrt: bool = Field(False, description="space the blur levels by their square roots")


class BlurIG(PathMethod):
    name = "blur-ig"
    title = "Blur integrated gradients"
    summary = "Blur integrated gradients: integrated gradients along ever stronger Gaussian blurs (Xu et al. 2020)"
    Params = BlurIGParams
    default_steps = 100

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        assert isinstance(params, BlurIGParams)
        return blur_integrated_gradients(
            port.gradients_for(context.score),
            image,
            target,
            self.steps(params, context),
            params.max_sigma,
            sqrt=params.sqrt,
            smoothing=context.smoothing,
            internal_batch_size=context.caps.rows_per_chunk,
        )
