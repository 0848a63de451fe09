"""Integrated gradients (Sundararajan et al., 2017) over any batched gradient function.

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i da

The integral is a quadrature rule from `quadrature` evaluated in chunks of `internal_batch_size`
rows, so memory stays bounded whatever `steps` is. Completeness (sum IG = F(x) - F(x')) is
reported as the check of the result and, with `tolerance`, drives refinement: the step count
doubles until the relative completeness error is under the tolerance or `max_steps` is reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mindscope.engine.explain.explanation import Explanation, Smoothing
from mindscope.engine.explain.method import Context, MethodParams, ModelPort, PathMethod, steps_field
from mindscope.engine.explain.rows import GradientFn, gradient_rows
from mindscope.engine.quadrature import RULES
from mindscope.errors import InvalidInput

BASELINES = ("black", "white", "blur", "uniform-noise")


@dataclass(frozen=True)
class IntegratedGradientsResult:
    """attributions: float32 (H, W, C), same shape as the input; sums to about F(x) - F(baseline).
    scores: F(x) for every class (probabilities, or logits when the logit was explained)."""

    attributions: np.ndarray
    baseline: np.ndarray
    target: int
    method: str
    steps: int
    gradient_evaluations: int
    output_at_input: float
    output_at_baseline: float
    scores: np.ndarray

    @property
    def attribution_sum(self) -> float:
        return float(np.sum(self.attributions, dtype=np.float64))

    @property
    def delta(self) -> float:
        """|sum of attributions - (F(x) - F(baseline))|."""
        return abs(self.attribution_sum - (self.output_at_input - self.output_at_baseline))

    @property
    def relative_delta(self) -> float:
        difference = abs(self.output_at_input - self.output_at_baseline)
        return self.delta / difference if difference > 0 else (0.0 if self.delta == 0 else float("inf"))


def make_baseline(kind: str, image: np.ndarray, seed: int = 0) -> np.ndarray:
    """A baseline for float32 (H, W, C) `image` in [0, 1]: black, white, blur or uniform-noise."""
    if kind == "black":
        return np.zeros_like(image, dtype=np.float32)
    if kind == "white":
        return np.ones_like(image, dtype=np.float32)
    if kind == "blur":
        return gaussian_blur(image, sigma=3.0)
    if kind == "uniform-noise":
        return np.random.default_rng(seed).uniform(0.0, 1.0, image.shape).astype(np.float32)
    raise InvalidInput(f"unknown baseline {kind!r}", valid_baselines=[*BASELINES, "an uploaded image"])


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float (H, W, C) image with reflected edges."""
    radius = int(3 * sigma)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k * padded[i : i + image.shape[0], :, :] for i, k in enumerate(kernel))
    blurred = sum(k * rows[:, i : i + image.shape[1], :] for i, k in enumerate(kernel))
    return np.asarray(blurred, dtype=np.float32)


def _path_gradients(
    gradient_fn: GradientFn,
    image: np.ndarray,
    baseline: np.ndarray,
    alphas: np.ndarray,
    target: int,
    internal_batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients at baseline + alpha * (image - baseline) for each alpha (`explain.rows`)."""
    difference = image - baseline

    def rows(start: int, stop: int) -> np.ndarray:
        part = alphas[start:stop].astype(np.float32)
        return baseline[None] + part[:, None, None, None] * difference[None]

    return gradient_rows(gradient_fn, len(alphas), rows, target, internal_batch_size)


def attribute(
    gradient_fn: GradientFn,
    image: np.ndarray,
    target: int | None = None,
    baseline: np.ndarray | None = None,
    steps: int = 50,
    method: str = "gauss_legendre",
    internal_batch_size: int = 64,
    tolerance: float | None = None,
    max_steps: int | None = None,
) -> IntegratedGradientsResult:
    """Integrated gradients of one image.

    image, baseline: float32 (H, W, C) in [0, 1] (baseline defaults to black).
    target: class index; None explains the predicted class.
    steps: quadrature points; with `tolerance`, the first of a doubling sequence capped at max_steps
    (no doubling without a cap).
    """
    if method not in RULES:
        raise InvalidInput(f"unknown method {method!r}", valid_methods=sorted(RULES))
    image = np.asarray(image, np.float32)
    baseline = np.zeros_like(image) if baseline is None else np.asarray(baseline, np.float32)
    if baseline.shape != image.shape:
        raise InvalidInput(f"baseline shape {baseline.shape} differs from the image's {image.shape}")
    rule = RULES[method]

    evaluations = 0
    if target is None:
        _, scores = gradient_fn(image[None], np.zeros(1, np.int32))
        target = int(np.argmax(scores[0]))
        evaluations = 1
    # The first pass also evaluates alpha = 1 and 0 (weight 0): F(x) and F(baseline) ride along in
    # the same compiled call instead of costing one of their own.
    ends: tuple[float, float, np.ndarray] | None = None
    while True:
        alphas, weights = rule(steps)
        if ends is None:
            alphas, weights = np.concatenate([[1.0, 0.0], alphas]), np.concatenate([[0.0, 0.0], weights])
        grads, scores = _path_gradients(gradient_fn, image, baseline, alphas, target, internal_batch_size)
        if ends is None:
            ends = (float(scores[0, target]), float(scores[1, target]), scores[0])
        evaluations += len(alphas)
        average = np.tensordot(weights, grads.astype(np.float64), axes=1)
        result = IntegratedGradientsResult(
            attributions=((image - baseline) * average).astype(np.float32),
            baseline=baseline,
            target=target,
            method=method,
            steps=steps,
            gradient_evaluations=evaluations,
            output_at_input=ends[0],
            output_at_baseline=ends[1],
            scores=ends[2],
        )
        if tolerance is None or result.relative_delta <= tolerance or steps * 2 > (max_steps or steps):
            return result
        steps *= 2


def smoothed_attribute(
    gradient_fn: GradientFn,
    image: np.ndarray,
    smoothing: Smoothing,
    target: int | None = None,
    baseline: np.ndarray | None = None,
    **options: Any,
) -> IntegratedGradientsResult:
    """SmoothGrad of integrated gradients: `attribute` on each of `smoothing`'s noisy copies of the
    image (each its own path from the same baseline, for the same target), then their mean.

    Completeness still holds, for the mean: the attributions sum to the mean of F over the copies
    minus F(baseline), which `output_at_input` is; `scores` stay the image's own. Only the mean
    combines so (a mean of squares or a variance has no such sum), so other kinds are refused.
    """
    if smoothing.samples == 0:
        return attribute(gradient_fn, image, target=target, baseline=baseline, **options)
    if smoothing.kind != "mean":
        raise InvalidInput(
            f"integrated gradients combine noisy samples by their mean only (smooth=mean): a {smoothing.kind} "
            "of attributions no longer sums to the change in the score, which the completeness check measures",
            valid_smooth=["mean"],
        )
    if options.get("tolerance") is not None:
        raise InvalidInput("tolerance refines one path; with samples, give steps instead", samples=smoothing.samples)
    image = np.asarray(image, np.float32)
    _, clean = gradient_fn(image[None], np.zeros(1, np.int32))
    target = int(np.argmax(clean[0])) if target is None else target
    results = [
        attribute(gradient_fn, noisy, target=target, baseline=baseline, **options) for noisy in smoothing.images(image)
    ]
    first = results[0]
    return IntegratedGradientsResult(
        attributions=smoothing.combine(np.stack([r.attributions for r in results])),
        baseline=first.baseline,
        target=target,
        method=first.method,
        steps=first.steps,
        gradient_evaluations=1 + sum(r.gradient_evaluations for r in results),
        output_at_input=float(np.mean([r.output_at_input for r in results], dtype=np.float64)),
        output_at_baseline=first.output_at_baseline,
        scores=clean[0],
    )


@dataclass(frozen=True)
class InteriorGradientsResult:
    """gradients: float32 (A, H, W, C) at alpha * image; outputs: float32 (A,) F[target](alpha * image)."""

    alphas: np.ndarray
    gradients: np.ndarray
    outputs: np.ndarray
    target: int


def interior_gradients(
    gradient_fn: GradientFn,
    image: np.ndarray,
    alphas: np.ndarray,
    target: int | None = None,
    internal_batch_size: int = 64,
) -> InteriorGradientsResult:
    """Gradients at scaled inputs alpha * image (Sundararajan et al.'s interior gradients)."""
    image = np.asarray(image, np.float32)
    alphas = np.asarray(alphas, np.float64)
    if target is None:
        _, scores = gradient_fn(image[None], np.zeros(1, np.int32))
        target = int(np.argmax(scores[0]))
    zeros = np.zeros_like(image)
    grads, scores = _path_gradients(gradient_fn, image, zeros, alphas, target, internal_batch_size)
    return InteriorGradientsResult(alphas.astype(np.float32), grads, scores[:, target], target)


Rule = Literal["riemann_left", "riemann_right", "riemann_midpoint", "riemann_trapezoid", "gauss_legendre"]
assert set(Rule.__args__) == set(RULES)  # type: ignore[attr-defined]


class IntegratedGradientsParams(MethodParams):
    steps: int | None = steps_field(50)
    method: Rule = Field("gauss_legendre", description="the quadrature rule along the path")
    baseline: Literal["black", "white", "blur", "uniform-noise", "upload"] = Field(
        "black", description="the path's start; upload: the request's own `baseline` image"
    )
    tolerance: float | None = Field(
        None, gt=0, lt=1, description="refine (doubling steps) until relative delta <= this"
    )


class IntegratedGradients(PathMethod):
    name = "integrated-gradients"
    title = "Integrated gradients"
    summary = "Integrated gradients of the target's probability or logit, with the completeness check"
    Params = IntegratedGradientsParams
    default_steps = 50
    answer = "integrated-gradients"

    def check(self, port: ModelPort, params: MethodParams, context: Context) -> None:
        assert isinstance(params, IntegratedGradientsParams)
        if params.baseline == "upload" and context.baseline_image is None:
            raise InvalidInput("baseline=upload needs a baseline image (multipart field or JSON 'baseline')")

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        assert isinstance(params, IntegratedGradientsParams)
        if params.baseline == "upload":
            assert context.baseline_image is not None
            baseline = context.baseline_image
        else:
            baseline = make_baseline(params.baseline, image)
        result = smoothed_attribute(
            port.gradients_for(context.score),
            image,
            context.smoothing,
            target=target,
            baseline=baseline,
            steps=self.steps(params, context),
            method=params.method,
            internal_batch_size=context.caps.rows_per_chunk,
            tolerance=params.tolerance,
            max_steps=context.caps.max_steps,
        )
        details = {"method": params.method, "baseline": params.baseline, "steps": result.steps}
        return Explanation(
            self.name, result.target, result.attributions, result.gradient_evaluations, 0, details, extra=result
        )
