"""Guided integrated gradients (Kapishnikov et al. 2021): integrated gradients along a path the
model's gradients choose. From the baseline, each of `steps` steps moves the features with the
smallest absolute gradient (a `fraction` of them at a time) towards the input until the path has
covered 1/steps of the L1 distance, never letting a feature stray more than `max_dist` (as a
fraction of the way) from the straight line; the attributions sum gradient x the move of each
feature. `max_dist=0` is integrated gradients on the straight line (Riemann sums).

The path depends on the gradients met on the way, so its steps run one after another; noisy
SmoothGrad copies walk their paths in step, one gradient row each per step, in one batch.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from mindscope.engine.explain.explanation import NO_SMOOTHING, Explanation, Smoothing, smoothed
from mindscope.engine.explain.integrated_gradients import make_baseline
from mindscope.engine.explain.method import Context, MethodParams, ModelPort, PathMethod, steps_field
from mindscope.engine.explain.rows import GradientFn, gradient_rows, slices

EPSILON = 1e-9


class _Path:
    """One input's walk from its baseline, in float64."""

    def __init__(self, image: np.ndarray, baseline: np.ndarray, steps: int, fraction: float, max_dist: float) -> None:
        self.image, self.baseline = image.astype(np.float64), baseline.astype(np.float64)
        self.x = self.baseline.copy()
        self.steps, self.fraction, self.max_dist = steps, fraction, max_dist
        self.l1_total = float(np.abs(self.image - self.baseline).sum())
        self.attributions = np.zeros_like(self.image)

    def _at(self, alpha: float) -> np.ndarray:
        return self.baseline + (self.image - self.baseline) * alpha

    def advance(self, step: int, gradient: np.ndarray) -> None:
        """Step `step` (0-based) with the gradient at the current point."""
        if self.l1_total == 0:
            return
        gradient = gradient.astype(np.float64)
        alpha = (step + 1.0) / self.steps
        alpha_min, alpha_max = max(alpha - self.max_dist, 0.0), min(alpha + self.max_dist, 1.0)
        x_min, x_max = self._at(alpha_min), self._at(alpha_max)
        l1_target = self.l1_total * (1 - (step + 1) / self.steps)
        span = self.image - self.baseline
        gamma = math.inf
        while gamma > 1.0:
            x_old = self.x.copy()
            with np.errstate(divide="ignore", invalid="ignore"):
                x_alpha = np.where(span != 0, (self.x - self.baseline) / span, np.nan)
            x_alpha[np.isnan(x_alpha)] = alpha_max
            behind = x_alpha < alpha_min  # features that fell behind the band catch up with it
            self.x[behind] = x_min[behind]
            l1_current = float(np.abs(self.x - self.image).sum())
            if math.isclose(l1_target, l1_current, rel_tol=EPSILON, abs_tol=EPSILON):
                self.attributions += (self.x - x_old) * gradient
                break
            candidates = np.abs(gradient)
            candidates[self.x == x_max] = np.inf  # features at the band's edge stay
            threshold = np.quantile(candidates, self.fraction, method="lower")
            selected = (candidates <= threshold) & (candidates != np.inf)
            l1_selected = float((np.abs(self.x - x_max) * selected).sum())
            gamma = (l1_current - l1_target) / l1_selected if l1_selected > 0 else math.inf
            if gamma > 1.0:
                self.x[selected] = x_max[selected]
            else:
                self.x[selected] = (self.x + (x_max - self.x) * gamma)[selected]
            self.attributions += (self.x - x_old) * gradient


def guided_integrated_gradients(
    gradient_fn: GradientFn,
    image: np.ndarray,
    target: int,
    baseline: np.ndarray | None = None,
    steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
    smoothing: Smoothing = NO_SMOOTHING,
    internal_batch_size: int = 64,
) -> Explanation:
    base = np.zeros_like(image) if baseline is None else baseline

    def batched(images: np.ndarray) -> tuple[np.ndarray, int, int]:
        paths = [_Path(x, base, steps, fraction, max_dist) for x in images]
        for step in range(steps):
            points = np.stack([path.x for path in paths]).astype(np.float32)
            grads, _ = gradient_rows(gradient_fn, len(paths), slices(points), target, internal_batch_size)
            for path, gradient in zip(paths, grads, strict=True):
                path.advance(step, gradient)
        return np.stack([path.attributions for path in paths]).astype(np.float32), steps * len(paths), 0

    details = {"steps": steps, "fraction": fraction, "max_dist": max_dist}
    return smoothed("guided-ig", image, target, smoothing, batched, details)


class GuidedIGParams(MethodParams):
    steps: int | None = steps_field(200)
    fraction: float = Field(0.25, gt=0, le=1, description="share of features moved at a time")
    max_dist: float = Field(
        0.02, ge=0, le=1, description="how far (fraction of the way) a feature may stray from the straight line"
    )
    baseline: Literal["black", "white", "blur", "uniform-noise"] = "black"


class GuidedIG(PathMethod):
    name = "guided-ig"
    title = "Guided integrated gradients"
    summary = (
        "Guided integrated gradients: along a path that moves the least important pixels first "
        "(Kapishnikov et al. 2021)"
    )
    Params = GuidedIGParams
    default_steps = 200

    def depth(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        return self.steps(params, context)  # each step's gradient chooses where the next one is

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        assert isinstance(params, GuidedIGParams)
        return guided_integrated_gradients(
            port.gradients_for(context.score),
            image,
            target,
            make_baseline(params.baseline, image),
            self.steps(params, context),
            params.fraction,
            params.max_dist,
            context.smoothing,
            context.caps.rows_per_chunk,
        )
