"""XRAI (Kapishnikov et al. 2019): attributions by region instead of by pixel.

1. Integrated gradients from a black and a white baseline (the image's min and max), averaged,
   each pixel's channels reduced to their maximum.
2. Regions from Felzenszwalb's graph segmentation (scikit-image) at six scales (50 ... 1200,
   sigma 0.8, min size 150) of the image scaled to [-1, 1] and resized to 224x224, brought back to
   the image's size and dilated by a disk of radius 5, as the paper's implementation does, so the
   regions overlap and nest.
3. Greedily, the region whose not-yet-covered pixels have the highest mean attribution is added
   next (regions adding fewer than `min_pixel_diff` new pixels are dropped), until the image is
   covered. Each pixel gets the gain of the region that first covered it; `ranks` numbers the
   regions in order of gain (1 = the most important), which is what "the top regions" means.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field
from skimage import segmentation
from skimage.morphology import dilation, disk
from skimage.transform import resize

from mindscope.engine.explain.explanation import Explanation
from mindscope.engine.explain.integrated_gradients import attribute
from mindscope.engine.explain.method import Context, MethodParams, ModelPort, PathMethod, steps_field
from mindscope.engine.explain.rows import GradientFn

SCALES = (50, 100, 150, 250, 500, 1200)
SIGMA = 0.8
MIN_SEGMENT = 150
SEGMENTATION_SIZE = (224, 224)
DILATION_RADIUS = 5


def regions(image: np.ndarray) -> list[np.ndarray]:
    """Boolean (H, W) masks of every segment at every scale, dilated."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) * 2.0 - 1.0 if high > low else np.zeros_like(image)
    resized = resize(scaled, SEGMENTATION_SIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    channel_axis = -1 if image.shape[-1] == 3 else None
    if channel_axis is None:
        resized = resized[..., 0]
    masks = []
    footprint = disk(DILATION_RADIUS)
    for scale in SCALES:
        labels = segmentation.felzenszwalb(
            resized, scale=scale, sigma=SIGMA, min_size=MIN_SEGMENT, channel_axis=channel_axis
        )
        labels = resize(
            labels, image.shape[:2], order=0, preserve_range=True, mode="constant", anti_aliasing=False
        ).astype(int)
        masks += [dilation(labels == label, footprint=footprint) for label in range(labels.min(), labels.max() + 1)]
    return masks


def rank_regions(
    attribution: np.ndarray, masks: list[np.ndarray], min_pixel_diff: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """(gain per pixel float64 (H, W), region rank per pixel int (H, W), 1 = most important)."""
    gains = np.full(attribution.shape, -np.inf)
    covered = np.zeros(attribution.shape, bool)
    remaining = dict(enumerate(masks))
    trace: list[tuple[np.ndarray, float]] = []
    while covered.mean() <= 1.0:
        best_gain, best_key = -np.inf, None
        for key in list(remaining):
            new = remaining[key] & ~covered
            if new.sum() < min_pixel_diff:
                del remaining[key]
                continue
            gain = float(attribution[new].mean())
            if gain > best_gain:
                best_gain, best_key = gain, key
        if best_key is None:
            break
        new = remaining.pop(best_key) & ~covered
        trace.append((new, best_gain))
        covered |= new
        gains[new] = best_gain
    left = gains == -np.inf
    if left.any():
        gains[left] = float(attribution[left].mean())
    ordered = [mask for mask, _ in sorted(trace, key=lambda item: -item[1])] + ([left] if left.any() else [])
    ranks = np.zeros(attribution.shape, int)
    for rank, mask in enumerate(ordered, start=1):
        ranks[mask] = rank
    return gains, ranks


def xrai(
    gradient_fn: GradientFn,
    image: np.ndarray,
    target: int,
    steps: int = 32,
    min_pixel_diff: int = 50,
    internal_batch_size: int = 64,
) -> Explanation:
    """float32 (H, W, 1): each pixel's region gain; details say how many regions were ranked."""
    maps = [
        attribute(
            gradient_fn, image, target, np.full_like(image, value), steps, internal_batch_size=internal_batch_size
        )
        for value in (float(image.min()), float(image.max()))
    ]
    attribution = np.mean([m.attributions for m in maps], axis=0).max(axis=-1).astype(np.float64)
    gains, ranks = rank_regions(attribution, regions(image), min_pixel_diff)
    details = {"steps": steps, "baselines": "black and white", "regions": int(ranks.max())}
    evaluations = sum(m.gradient_evaluations for m in maps)
    return Explanation("xrai", target, gains[..., None].astype(np.float32), evaluations, 0, details, ranks)


class XraiParams(MethodParams):
    steps: int | None = steps_field(32)
    min_pixel_diff: int = Field(50, ge=1, le=10_000, description="a region must add at least this many new pixels")


class Xrai(PathMethod):
    name = "xrai"
    title = "XRAI regions"
    summary = "XRAI: integrated gradients (black and white baselines) gathered over image regions, ranked"
    Params = XraiParams
    default_steps = 32
    paths = 2
    smooths = False
    signed = False

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        assert isinstance(params, XraiParams)
        steps = self.steps(params, context)
        gradient_fn = port.gradients_for(context.score)
        return xrai(gradient_fn, image, target, steps, params.min_pixel_diff, context.caps.rows_per_chunk)
