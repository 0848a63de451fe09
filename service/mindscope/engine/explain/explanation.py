"""What every explanation method answers, and SmoothGrad, the modifier any gradient method takes.

SmoothGrad (Smilkov et al. 2017) averages a method's attributions over noisy copies of the image:
x + N(0, sigma^2) with sigma = `noise` x (max(x) - min(x)), the paper's noise level. `kind` says
how the samples combine: "mean" (SmoothGrad), "square" (SquareGrad: the mean of squares, which is
PAIR saliency's `magnitude=True`) or "var" (VarGrad: their variance). The noise comes from
`seed`, so the same request gets the same answer. Methods take every sample at once (a batch of
images) and queue all their rows together, so the samples share batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mindscope.errors import InvalidInput

SmoothKind = Literal["mean", "square", "var"]


@dataclass(frozen=True)
class Explanation:
    """attributions: float32 (H, W, C) like the input, or (H, W, 1) for a map of pixels (Grad-CAM,
    occlusion). Evaluations count the rows the model computed: gradient rows and forward rows."""

    method: str
    target: int
    attributions: np.ndarray
    gradient_evaluations: int
    forward_evaluations: int
    details: dict[str, Any] = field(default_factory=dict)
    regions: np.ndarray | None = None  # XRAI: int (H, W), each pixel's region by rank, 1 = most important
    # What one value of the map is, in words, where it is not a plain attribution (occlusion: a fall
    # in p), and the colour bar's label for it; "the target's probability" is named in pictures.
    values: str = ""
    scale: str = ""
    # A method's own result beside the map (integrated gradients: completeness, steps, baseline).
    extra: Any = None


@dataclass(frozen=True)
class Smoothing:
    samples: int = 0  # 0: no smoothing
    noise: float = 0.15
    kind: SmoothKind = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 0 or not 0 < self.noise <= 1:
            raise InvalidInput("SmoothGrad needs samples >= 0 and noise in (0, 1]", samples=self.samples)

    def images(self, image: np.ndarray) -> np.ndarray:
        """The image alone, or `samples` noisy copies of it: float32 (S, H, W, C)."""
        if self.samples == 0:
            return image[None]
        sigma = self.noise * float(image.max() - image.min())
        noise = np.random.default_rng(self.seed).normal(0.0, sigma, (self.samples, *image.shape))
        return (image[None] + noise).astype(np.float32)

    def combine(self, attributions: np.ndarray) -> np.ndarray:
        """(S, H, W, C) attributions of the samples -> (H, W, C)."""
        if self.samples == 0:
            return attributions[0]
        values = attributions.astype(np.float64)
        if self.kind == "square":
            combined = np.mean(values**2, axis=0)
        elif self.kind == "var":
            combined = np.var(values, axis=0)
        else:
            combined = np.mean(values, axis=0)
        return combined.astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return (
            {}
            if self.samples == 0
            else {"smoothing": {"samples": self.samples, "noise": self.noise, "kind": self.kind, "seed": self.seed}}
        )


NO_SMOOTHING = Smoothing()


def smoothed(
    name: str,
    image: np.ndarray,
    target: int,
    smoothing: Smoothing,
    batched: Callable[[np.ndarray], tuple[np.ndarray, int, int]],
    details: dict[str, Any] | None = None,
) -> Explanation:
    """Run `batched` (images (S, H, W, C) -> (attributions (S, ...), gradient rows, forward rows))
    on the image or its noisy copies, and combine."""
    attributions, gradient_rows, forward_rows = batched(smoothing.images(image))
    return Explanation(
        name,
        target,
        smoothing.combine(attributions),
        gradient_rows,
        forward_rows,
        {**(details or {}), **smoothing.describe()},
    )
