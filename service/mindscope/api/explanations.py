"""An explanation as the wire carries it: the JSON answer of each shape (`ExplanationResponse`, and
integrated gradients' own with its completeness check) and the picture with its headers. Every
front end that answers an explanation (the REST routes, the V1 protocol) maps the runner's result
through here; the pictures themselves are drawn in `render/`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastapi import Response

from mindscope.api.responses import model_ref, picture_response
from mindscope.api.schemas import (
    ArrayPayload,
    Completeness,
    CurveOut,
    EvaluationOut,
    EvaluationsOut,
    ExplanationResponse,
    IntegratedGradientsResponse,
    SanityOut,
    TargetOut,
    ToleranceOut,
)
from mindscope.dataplane.decoding import DecodedImage
from mindscope.engine.explain.evaluation import Evaluation
from mindscope.engine.explain.integrated_gradients import IntegratedGradientsResult
from mindscope.engine.explain.method import Context, Method, MethodParams, Sign
from mindscope.engine.explain.runner import Explained
from mindscope.engine.loaded_model import LoadedModel
from mindscope.render.heatmaps import AttributionCaption, Trust, TrustCurve, attribution_figure

# The PNG answer's headers for integrated gradients: what the JSON answer says beside the attributions.
IG_HEADERS = {
    "X-IG-Target": "class index explained",
    "X-IG-Target-Label": "its class name",
    "X-IG-Steps": "quadrature points used",
    "X-IG-Gradient-Evaluations": "gradient rows evaluated",
    "X-IG-Attribution-Sum": "sum of the attributions",
    "X-IG-Output-At-Input": "F(input) for the target class",
    "X-IG-Output-At-Baseline": "F(baseline) for the target class",
    "X-IG-Relative-Delta": "|sum - (F(input) - F(baseline))| / |F(input) - F(baseline)|",
    "X-IG-Tolerance-Met": "with ?tolerance: true when the relative delta reached it, false if the steps cap came first",
}
SMOOTH_NAMES = {"mean": "SmoothGrad", "square": "SquareGrad", "var": "VarGrad"}


@dataclass(frozen=True)
class Answering:
    """How the request wants its answer: a PNG or JSON, and the picture's options."""

    png: bool = False
    sign: Sign | None = None  # None: the method's own
    clip_percentile: float = 99.0


def evaluation_out(evaluation: Evaluation | None, target: int) -> EvaluationOut | None:
    if evaluation is None:
        return None
    curves = {
        kind: CurveOut(fractions=found.fractions.tolist(), scores=found.scores.tolist(), area=found.area)
        for kind, found in evaluation.curves.items()
    }
    sanity = None if evaluation.sanity is None else SanityOut(rank_correlation=evaluation.sanity, target=target)
    return EvaluationOut(**curves, sanity=sanity)


def trust_of(evaluation: Evaluation | None) -> Trust | None:
    """The scores `evaluate` asked for, as the PNG's fourth panel draws them."""
    if evaluation is None:
        return None
    curves = tuple(
        TrustCurve(kind, found.fractions.tolist(), found.scores.tolist(), found.area)
        for kind, found in evaluation.curves.items()
    )
    return Trust(curves, evaluation.sanity)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores.astype(np.float64) - scores.max())
    return (shifted / shifted.sum()).astype(np.float32)


def answer(
    loaded: LoadedModel,
    method: Method,
    params: MethodParams,
    context: Context,
    image: DecodedImage,
    explained: Explained,
    answering: Answering,
) -> ExplanationResponse | IntegratedGradientsResponse | Response:
    """The answer in the method's shape, JSON or PNG."""
    if method.answer == "integrated-gradients":
        return _integrated_gradients(loaded, params, context, image, explained, answering)
    result = explained.explanation
    index = result.target
    label = loaded.class_names[index]
    if answering.png:
        summary = ", ".join(
            f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
            for k, v in result.details.items()
            if not isinstance(v, dict) and k != "output_at_input"  # the title gives p already
        )
        efficiency = result.details.get("efficiency")
        if efficiency:
            summary += f", efficiency error {efficiency['delta']:.1e}"
        smoothing = result.details.get("smoothing")
        if smoothing:
            smoothed = (
                f"{SMOOTH_NAMES[smoothing['kind']]} of {smoothing['samples']} samples, noise {smoothing['noise']:g}"
            )
            summary = f"{summary}, {smoothed}" if summary else smoothed
        probability = float(explained.probabilities[index])
        headline = f"{method.title}: why '{label}' (p = {probability:.3f})" + (f" - {summary}" if summary else "")
        caption = AttributionCaption(
            label,
            probability,
            result.method,
            0,
            0.0,
            context.score,
            headline=headline,
            values=result.values,
            scale=result.scale,
        )
        sign = answering.sign or method.sign
        figure = attribution_figure(
            image.pixels, result.attributions, caption, sign, answering.clip_percentile, trust_of(explained.evaluation)
        )
        return picture_response(figure)
    return ExplanationResponse(
        method=result.method,
        target=TargetOut(index=index, label=label),
        score=context.score,
        attributions=ArrayPayload.of(result.attributions),
        parameters=result.details,
        values=result.values or f"attribution to the target's {context.score}",
        regions=None if result.regions is None else ArrayPayload.of(result.regions),
        evaluations=EvaluationsOut(gradient=result.gradient_evaluations, forward=result.forward_evaluations + 1),
        evaluation=evaluation_out(explained.evaluation, index),
        seconds=explained.seconds,
        probabilities=ArrayPayload.of(explained.probabilities),
        classes=list(loaded.class_names),
        input=image.info,
        model=model_ref(loaded),
    )


def _integrated_gradients(
    loaded: LoadedModel,
    params: MethodParams,
    context: Context,
    image: DecodedImage,
    explained: Explained,
    answering: Answering,
) -> IntegratedGradientsResponse | Response:
    result = explained.explanation.extra
    assert isinstance(result, IntegratedGradientsResult)
    tolerance = getattr(params, "tolerance", None)
    reached = None
    if tolerance is not None:
        reached = ToleranceOut(
            requested=tolerance,
            met=result.relative_delta <= tolerance,
            relative_delta=result.relative_delta,
            max_steps=context.caps.max_steps,
        )
    label = loaded.class_names[result.target]
    score, smoothing = context.score, context.smoothing
    if answering.png:
        caption = AttributionCaption(
            label, result.output_at_input, result.method, result.steps, result.relative_delta, score
        )
        if smoothing.samples:
            caption = AttributionCaption(
                label,
                result.output_at_input,
                result.method,
                result.steps,
                result.relative_delta,
                score,
                headline=f"Integrated gradients: why '{label}' ({caption.symbol} = {result.scores[result.target]:.3f}) "
                f"- {result.method}, {result.steps} steps, SmoothGrad of {smoothing.samples} samples, noise "
                f"{smoothing.noise:g}, completeness error {result.relative_delta:.1e}",
            )
        figure = attribution_figure(
            image.pixels,
            result.attributions,
            caption,
            answering.sign or "all",
            answering.clip_percentile,
            trust_of(explained.evaluation),
        )
        response = picture_response(figure)
        response.headers.update(_summary_headers(result, label, reached))
        return response
    return IntegratedGradientsResponse(
        target=TargetOut(index=result.target, label=label),
        score=score,
        method=result.method,
        baseline=explained.explanation.details["baseline"],
        steps=result.steps,
        gradient_evaluations=result.gradient_evaluations,
        attributions=ArrayPayload.of(result.attributions),
        completeness=Completeness(
            attribution_sum=result.attribution_sum,
            output_at_input=result.output_at_input,
            output_at_baseline=result.output_at_baseline,
            delta=result.delta,
            relative_delta=result.relative_delta,
        ),
        tolerance=reached,
        smoothing=smoothing.describe().get("smoothing"),
        evaluation=evaluation_out(explained.evaluation, result.target),
        probabilities=ArrayPayload.of(result.scores if score == "probability" else softmax(result.scores)),
        classes=list(loaded.class_names),
        input=image.info,
        model=model_ref(loaded),
    )


def _summary_headers(result: IntegratedGradientsResult, label: str, reached: ToleranceOut | None) -> dict[str, str]:
    """What the JSON answer says beside the attributions, for a PNG answer (one call, not two)."""
    values = (
        result.target,
        label,
        result.steps,
        result.gradient_evaluations,
        result.attribution_sum,
        result.output_at_input,
        result.output_at_baseline,
        result.relative_delta,
    )
    headers = {
        name: repr(value) if isinstance(value, float) else str(value)
        for name, value in zip(IG_HEADERS, values, strict=False)
    }
    if reached is not None:
        headers["X-IG-Tolerance-Met"] = "true" if reached.met else "false"
    return headers
