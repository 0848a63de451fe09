"""How far to trust an explanation: scores computed on the fly for any attribution map.

- Deletion and insertion (Petsiuk et al. 2018, RISE): rank pixels by attribution (summed over
  channels), then, in `steps` equal steps, remove the most-attributed pixels from the image
  (replace them with the baseline) / insert them into the baseline, and follow the target's
  probability. The area under each curve (trapezoids over the fraction of pixels, 0 to 1) is the
  score: a faithful map makes the deletion area small (the probability falls as soon as its top
  pixels go) and the insertion area large (it rises as soon as they come back). The curves' images
  are rows of the model's forward batcher, batched with concurrent predictions.
- The model-randomization sanity check (Adebayo et al. 2018): the same method on the model with
  its initial (untrained) weights, and the Spearman rank correlation between the two maps'
  per-pixel magnitudes. An explanation that barely changes when the learned weights are gone
  explains the input, not the model: low is good, near 1 is a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mindscope.engine.work import current_work
from mindscope.errors import InvalidInput

ForwardFn = Callable[[np.ndarray], np.ndarray]  # images (N, H, W, C) -> probabilities (N, K)
CURVES = ("deletion", "insertion")


@dataclass(frozen=True)
class Curve:
    kind: str  # "deletion" or "insertion"
    fractions: np.ndarray  # float64 (steps + 1,), 0 .. 1: the share of pixels removed / inserted
    scores: np.ndarray  # float64 (steps + 1,): the target's probability at each
    area: float  # trapezoidal area under scores over fractions


def pixel_order(attributions: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most attributed first (ties by position, so the order is stable)."""
    per_pixel = attributions.astype(np.float64).sum(axis=-1).ravel()
    return np.argsort(-per_pixel, kind="stable")


def curve_images(
    image: np.ndarray, baseline: np.ndarray, order: np.ndarray, kind: str, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fractions, images (steps + 1, H, W, C)) along the deletion or insertion path."""
    height, width, channels = image.shape
    pixels = height * width
    counts = np.round(np.linspace(0, pixels, steps + 1)).astype(np.int64)
    start, end = (image, baseline) if kind == "deletion" else (baseline, image)
    flat_start, flat_end = start.reshape(pixels, channels), end.reshape(pixels, channels)
    images = np.empty((steps + 1, pixels, channels), np.float32)
    for row, count in enumerate(counts):
        images[row] = flat_start
        chosen = order[:count]
        images[row, chosen] = flat_end[chosen]
    return counts / pixels, images.reshape(steps + 1, height, width, channels)


def curve(
    forward: ForwardFn,
    image: np.ndarray,
    baseline: np.ndarray,
    attributions: np.ndarray,
    target: int,
    kind: str,
    steps: int = 16,
    internal_batch_size: int = 64,
) -> Curve:
    fractions, images = curve_images(image, baseline, pixel_order(attributions), kind, steps)
    scores = []
    for start in range(0, len(images), internal_batch_size):
        current_work().check()
        scores.append(forward(images[start : start + internal_batch_size])[:, target].astype(np.float64))
    values = np.concatenate(scores)
    area = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(fractions)))
    return Curve(kind, fractions, values, area)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' per-pixel magnitudes (|value| summed over channels)."""
    first = np.abs(a.astype(np.float64)).sum(axis=-1).ravel()
    second = np.abs(b.astype(np.float64)).sum(axis=-1).ravel()
    return float(np.corrcoef(_ranks(first), _ranks(second))[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman's coefficient needs."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


EVALUATIONS = ("deletion", "insertion", "sanity")


@dataclass(frozen=True)
class Evaluation:
    """The scores a request asked for: its curves by kind, and the sanity check's rank correlation
    with the same method on the untrained model (None when not asked)."""

    curves: dict[str, Curve]
    sanity: float | None = None


@dataclass(frozen=True)
class Evaluate:
    """Which scores to compute on a map (`evaluate=deletion,insertion,sanity`) and the curves' points."""

    asked: tuple[str, ...] = ()
    steps: int = 16

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.asked if kind not in EVALUATIONS]
        if unknown:
            raise InvalidInput(f"unknown evaluation {unknown[0]!r}", valid_evaluations=list(EVALUATIONS))

    @property
    def sanity(self) -> bool:
        return "sanity" in self.asked

    def run(
        self,
        forward: ForwardFn,
        image: np.ndarray,
        target: int,
        attributions: np.ndarray,
        untrained_map: Callable[[], np.ndarray] | None,
        rows_per_chunk: int,
    ) -> Evaluation | None:
        """`untrained_map()`: the same method's map on the untrained model, for the sanity check."""
        if not self.asked:
            return None
        baseline = np.zeros_like(image)
        curves = {
            kind: curve(forward, image, baseline, attributions, target, kind, self.steps, rows_per_chunk)
            for kind in CURVES
            if kind in self.asked
        }
        sanity = spearman(attributions, untrained_map()) if self.sanity and untrained_map is not None else None
        return Evaluation(curves, sanity)
