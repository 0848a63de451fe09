"""Occlusion (Zeiler & Fergus 2014): slide a `size` x `size` patch of `value` over the image,
`stride` pixels at a time; each pixel's value is the mean fall in the target's probability over
the patches that cover it, so the map is in probability units (-1 to 1). PAIR saliency sums the
falls instead: its map is ours times the number of patches covering each pixel. Forward passes
only: every occluded copy is a row of the model's forward batcher, `internal_batch_size` at a
time, batched with concurrent predictions. With stride 1 these are PAIR saliency's patches; larger
strides cost stride^2 times fewer rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import Field

from mindscope.engine.explain.explanation import Explanation
from mindscope.engine.explain.method import Context, Method, MethodParams, ModelPort, within
from mindscope.engine.work import current_work

ForwardFn = Callable[[np.ndarray], np.ndarray]  # images (N, H, W, C) -> probabilities (N, K)


def windows(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of every patch that fits, `stride` apart (the last row and column of
    patches reach the far edges)."""
    rows = list(range(0, height - size + 1, stride))
    cols = list(range(0, width - size + 1, stride))
    rows += [height - size] if rows[-1] != height - size else []
    cols += [width - size] if cols[-1] != width - size else []
    return [(r, c) for r in rows for c in cols]


def occlusion(
    forward: ForwardFn,
    image: np.ndarray,
    target: int,
    size: int = 4,
    stride: int = 1,
    value: float = 0.0,
    internal_batch_size: int = 64,
) -> Explanation:
    """float32 (H, W, 1): per pixel, the mean of p(target | input) - p(target | patch over it) over
    the patches that cover it (positive: hiding the pixel lowers p)."""
    height, width, _ = image.shape
    corners = windows(height, width, size, stride)
    original = float(forward(image[None])[0, target])
    scores = np.zeros((height, width), np.float64)
    covering = np.zeros((height, width), np.int64)
    work = current_work()
    for start in range(0, len(corners), internal_batch_size):
        work.check()
        part = corners[start : start + internal_batch_size]
        occluded = np.repeat(image[None], len(part), axis=0)
        for row, (r, c) in enumerate(part):
            occluded[row, r : r + size, c : c + size, :] = value
        drops = original - forward(occluded)[:, target].astype(np.float64)
        for (r, c), drop in zip(part, drops, strict=True):
            scores[r : r + size, c : c + size] += drop
            covering[r : r + size, c : c + size] += 1
    details = {"size": size, "stride": stride, "value": value, "patches": len(corners), "output_at_input": original}
    mean = scores / np.maximum(covering, 1)
    values = f"mean fall in the target's probability when a {size}x{size} patch of {value:g} covers the pixel"
    scale = "fall in the target's probability (red: hiding the pixel lowers it)"
    return Explanation(
        "occlusion",
        target,
        mean[..., None].astype(np.float32),
        0,
        len(corners) + 1,
        details,
        values=values,
        scale=scale,
    )


class OcclusionParams(MethodParams):
    size: int = Field(4, ge=1, description="the patch's height and width in pixels")
    stride: int = Field(1, ge=1, description="pixels between patches (1: every position, as PAIR)")
    value: float = Field(0.0, ge=0, le=1, description="the patch's pixel value, 0 (black) to 1 (white)")


class Occlusion(Method):
    name = "occlusion"
    lane = "forward"
    title = "Occlusion"
    summary = "Occlusion: how much the target's probability falls when a patch covers each pixel"
    Params = OcclusionParams
    smooths = False
    signed = False
    scores = ("probability",)

    def what_rows(self) -> str:
        return "patches"

    def check(self, port: ModelPort, params: MethodParams, context: Context) -> None:
        assert isinstance(params, OcclusionParams)
        height, width, _ = port.input_shape
        within("size", params.size, 1, min(height, width), "the model's input size")

    def rows(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        assert isinstance(params, OcclusionParams)
        height, width, _ = port.input_shape
        return len(windows(height, width, params.size, params.stride))

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        assert isinstance(params, OcclusionParams)
        chunk = context.caps.rows_per_chunk
        return occlusion(port.predict, image, target, params.size, params.stride, params.value, chunk)
