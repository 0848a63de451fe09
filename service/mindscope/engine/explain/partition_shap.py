"""SHAP for images: Owen values over a hierarchical partition of the image (the algorithm of the
`shap` library's `PartitionExplainer` with an image masker; Lundberg & Lee 2017, Owen 1977).

The partition halves the image recursively, along its longest side (height, then width, the
colour channels last), exactly as `shap.maskers.Image` builds it, leaves numbered as shap numbers
them. A hidden part of the image shows the masker instead: a box blur of `kernel` pixels (shap's
`"blur(k,k)"`, OpenCV's border rule) or a constant `value`. From the whole partition down, each
group splits in two and each half is evaluated in the context of its sibling hidden and shown,
with half the weight; the groups whose halves change the target's probability most are split
first (a priority queue), `batch_size` masked images at a time, until `max_evals` model rows are
spent; what is left credits the unsplit groups, spread over their pixels by size. The values sum
to F(image) - F(everything hidden) exactly (Shapley efficiency), which the answer checks.

Every masked image is a row of the model's forward batcher, batched with concurrent requests.
With the same image, masker, `max_evals` and `batch_size`, the values equal shap's but where two
groups have exactly the same priority: shap breaks such ties at random, this takes them in order.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage

from mindscope.engine.explain.explanation import Explanation
from mindscope.engine.explain.method import Context, Method, MethodParams, ModelPort
from mindscope.engine.work import current_work

ForwardFn = Callable[[np.ndarray], np.ndarray]  # images (N, H, W, C) -> probabilities (N, K)


@dataclass(frozen=True)
class Partition:
    """The binary tree over M = H*W*C features: nodes 0..M-1 are the features, M..2M-2 the groups
    (the root last); `children[n - M]` are a group's two halves, `members[n]` its features."""

    features: int
    children: np.ndarray  # int64 (M - 1, 2)
    sizes: np.ndarray  # int64 (2M - 1,)
    members: tuple[np.ndarray, ...]


@functools.lru_cache(maxsize=8)
def partition(shape: tuple[int, int, int]) -> Partition:
    """shap.maskers.Image's axis-aligned halving of an (H, W, C) image, with its node numbering."""
    height, width, channels = shape
    features = height * width * channels
    children = np.zeros((max(features - 1, 0), 2), np.int64)
    heap = [(0, 0, height, 0, width, 0, channels, -1, False)]
    index = features - 2
    while heap:
        _, x0, x1, y0, y1, z0, z1, parent, is_left = heapq.heappop(heap)
        if parent >= 0:
            children[parent, 0 if is_left else 1] = index + features
        xw, yw, zw = x1 - x0, y1 - y0, z1 - z0
        if (xw, yw, zw) != (1, 1, 1):
            lx1, rx0, ly1, ry0, lz1, rz0 = x1, x0, y1, y0, z1, z0
            if xw >= yw and xw > 1:
                lx1 = rx0 = x0 + xw // 2
            elif yw > 1:
                ly1 = ry0 = y0 + yw // 2
            else:
                lz1 = rz0 = z0 + zw // 2
            left = (lx1 - x0) * (ly1 - y0) * (lz1 - z0)
            right = (x1 - rx0) * (y1 - ry0) * (z1 - rz0)
            heapq.heappush(heap, (-left, x0, lx1, y0, ly1, z0, lz1, index, True))
            heapq.heappush(heap, (-right, rx0, x1, ry0, y1, rz0, z1, index, False))
        index -= 1
    members: list[np.ndarray] = [np.array([n], np.int64) for n in range(features)]
    sizes = np.ones(2 * features - 1, np.int64)
    for group in range(features - 1):  # children are numbered below their parent
        left, right = children[group]
        members.append(np.concatenate([members[left], members[right]]))
        sizes[group + features] = sizes[left] + sizes[right]
    return Partition(features, children, sizes, tuple(members))


def box_blur(image: np.ndarray, kernel: int) -> np.ndarray:
    """OpenCV's `cv2.blur(image, (kernel, kernel))`: the mean over a kernel x kernel box per channel,
    edges reflected without repeating the edge pixel (BORDER_REFLECT_101)."""
    return ndimage.uniform_filter(image.astype(np.float64), size=(kernel, kernel, 1), mode="mirror").astype(image.dtype)


@dataclass(frozen=True)
class OwenValues:
    values: np.ndarray  # float64 (H, W, C)
    output_at_input: float  # F(image)[target]
    output_masked: float  # F(everything hidden)[target]
    evaluations: int  # masked images evaluated, the two ends included


def owen_values(
    forward: ForwardFn,
    image: np.ndarray,
    hidden: np.ndarray,
    target: int,
    max_evals: int = 500,
    batch_size: int = 10,
) -> OwenValues:
    """Owen values of `target`'s output for float (H, W, C) `image`, features shown from `image` or
    hidden as `hidden`, within `max_evals` model rows (the two ends included), as shap computes them."""
    tree = partition(image.shape)
    features = tree.features
    shown, masked = image.ravel(), hidden.ravel()

    def outputs(contexts: list[tuple[int, ...]]) -> np.ndarray:
        current_work().check()
        masks = np.zeros((len(contexts), features), bool)
        for row, nodes in enumerate(contexts):
            for node in nodes:
                masks[row, tree.members[node]] = True
        images = np.where(masks, shown, masked).reshape(len(contexts), *image.shape).astype(np.float32)
        return forward(images)[:, target].astype(np.float64)

    empty: tuple[int, ...] = ()
    root = 2 * features - 2
    f00, f11 = outputs([empty, (root,)])
    dvalues = np.zeros(2 * features - 1)
    order = itertools.count()
    queue = [(0.0, next(order), empty, float(f00), float(f11), root, 1.0)]
    budget, evaluations = max_evals - 2, 0
    while queue:
        if evaluations >= budget:  # what is left stays on the groups not split
            for _, _, _, low, high, node, weight in queue:
                dvalues[node] += (high - low) * weight
            break
        splits: list[tuple[tuple[int, ...], float, float, int, int, float]] = []
        contexts: list[tuple[int, ...]] = []
        while queue and len(contexts) < batch_size and evaluations + len(contexts) < budget:
            _, _, context, low, high, node, weight = heapq.heappop(queue)
            if node < features:
                dvalues[node] += (high - low) * weight
                continue
            left, right = tree.children[node - features]
            splits.append((context, low, high, int(left), int(right), weight))
            contexts += [(*context, int(left)), (*context, int(right))]
        if not splits:
            continue
        found = outputs(contexts)
        evaluations += len(contexts)
        for i, (context, low, high, left, right, weight) in enumerate(splits):
            f10, f01, half = found[2 * i], found[2 * i + 1], weight / 2
            for priority, entry in (
                (abs(f10 - low), (context, low, f10, left)),
                (abs(f01 - low), (context, low, f01, right)),
                (abs(high - f01), ((*context, right), f01, high, left)),
                (abs(high - f10), ((*context, left), f10, high, right)),
            ):
                heapq.heappush(queue, (-priority * half, next(order), *entry, half))
    values = _lower_credit(dvalues, tree)
    return OwenValues(values[:features].reshape(image.shape), float(f11), float(f00), evaluations + 2)


def _lower_credit(dvalues: np.ndarray, tree: Partition) -> np.ndarray:
    """Each group's credit passed down to its halves in proportion to their sizes (shap's lower_credit)."""
    values = dvalues.copy()
    features = tree.features
    for group in range(features - 2, -1, -1):  # parents before their children
        node = group + features
        left, right = tree.children[group]
        values[left] += values[node] * tree.sizes[left] / tree.sizes[node]
        values[right] += values[node] * tree.sizes[right] / tree.sizes[node]
    return values


class PartitionShapParams(MethodParams):
    max_evals: int = Field(500, ge=4, description="masked images to evaluate, the whole and the fully hidden included")
    masker: Literal["blur", "constant"] = Field(
        "blur", description="what a hidden part shows: a box blur of the image, or a constant value"
    )
    kernel: int | None = Field(
        None, ge=1, le=512, description="blur: the box's side in pixels; default a quarter of the image's height"
    )
    value: float = Field(0.5, ge=0, le=1, description="constant: the hidden pixels' value, 0 (black) to 1 (white)")
    batch_size: int = Field(
        64,
        ge=2,
        le=1024,
        description="masked images evaluated together (shap's batch_size: it sets the order of splits)",
    )


class PartitionShap(Method):
    name = "shap"
    lane = "forward"
    title = "SHAP (Owen values)"
    summary = "SHAP: Owen values of image regions over a hierarchical partition (shap's PartitionExplainer)"
    Params = PartitionShapParams
    smooths = False
    scores = ("probability",)

    def what_rows(self) -> str:
        return "max_evals"

    def depth(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        assert isinstance(params, PartitionShapParams)
        return -(-params.max_evals // params.batch_size)  # the partition splits batch after batch

    def rows(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        assert isinstance(params, PartitionShapParams)
        return params.max_evals

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        assert isinstance(params, PartitionShapParams)
        if params.masker == "blur":
            kernel = params.kernel or max(1, image.shape[0] // 4)
            hidden, masker = box_blur(image, kernel), {"masker": "blur", "kernel": kernel}
        else:
            hidden, masker = np.full_like(image, params.value), {"masker": "constant", "value": params.value}
        found = owen_values(port.predict, image, hidden, target, params.max_evals, params.batch_size)
        total = float(found.values.sum())
        change = found.output_at_input - found.output_masked
        details = {
            **masker,
            "max_evals": params.max_evals,
            "batch_size": params.batch_size,
            "efficiency": {
                "attribution_sum": total,
                "output_at_input": found.output_at_input,
                "output_masked": found.output_masked,
                "delta": abs(total - change),
            },
        }
        values = "Owen values: each pixel's share of the target's probability minus its value with all hidden"
        scale = "share of the target's probability (red raises it, blue lowers it)"
        return Explanation(
            self.name,
            target,
            found.values.astype(np.float32),
            0,
            found.evaluations,
            details,
            values=values,
            scale=scale,
        )
