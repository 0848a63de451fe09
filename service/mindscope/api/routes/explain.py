from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from mindscope.api.codecs import IMAGE_REQUEST_BODY, DecodedRequest, wants_png
from mindscope.api.deps import CommaSeparated, DecodedDep, FormatQuery, ModelDep, SettingsDep, settings_cap
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, model_ref, picture_response
from mindscope.api.schemas import (
    ArrayPayload,
    Completeness,
    CurveOut,
    EvaluationOut,
    EvaluationsOut,
    ExplainMethodOut,
    ExplainMethodsResponse,
    ExplanationResponse,
    IntegratedGradientsResponse,
    InteriorGradientsResponse,
    ParameterOut,
    SanityOut,
    TargetOut,
    ToleranceOut,
)
from mindscope.config import Settings
from mindscope.engine.explain.blur_ig import blur_integrated_gradients
from mindscope.engine.explain.evaluation import CURVES, curve, spearman
from mindscope.engine.explain.explanation import Explanation, Smoothing
from mindscope.engine.explain.grad_cam import grad_cam
from mindscope.engine.explain.gradients import vanilla_gradients
from mindscope.engine.explain.guided_ig import guided_integrated_gradients
from mindscope.engine.explain.occlusion import occlusion, windows
from mindscope.engine.explain.xrai import xrai
from mindscope.engine.integrated_gradients import (
    IntegratedGradientsResult,
    interior_gradients,
    make_baseline,
    smoothed_attribute,
)
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.quadrature import RULES
from mindscope.errors import InvalidInput
from mindscope.render.heatmaps import (
    AttributionCaption,
    Sign,
    Trust,
    TrustCurve,
    attribution_figure,
    interior_strip,
)

router = APIRouter(prefix="/explain", tags=["explain"])
Method = Literal["riemann_left", "riemann_right", "riemann_midpoint", "riemann_trapezoid", "gauss_legendre"]
assert set(Method.__args__) == set(RULES)  # type: ignore[attr-defined]
TargetQuery = Annotated[
    str | None, Query(max_length=64, description="class index or name; default: the predicted class")
]
ScoreQuery = Annotated[
    Literal["probability", "logit"],
    Query(
        description="what to attribute: the target's probability, or its logit (pre-softmax score; for models "
        "that output logits or end in a separate softmax layer; GET /models/{name} lists a model's scores)"
    ),
]

# The PNG answer's headers: what the JSON answer says beside the attributions.
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
MIN_STEPS = 2


@router.get("", response_model=ExplainMethodsResponse, summary="The explanation methods, their parameters and caps")
def list_explain_methods(request: Request) -> ExplainMethodsResponse:
    """Read off this server's OpenAPI schema, so the caps are the ones its Settings enforce."""
    methods = []
    for path, operations in request.app.openapi()["paths"].items():
        if not path.startswith(router.prefix + "/") or "post" not in operations:
            continue
        operation = operations["post"]
        parameters = [
            ParameterOut(
                name=p["name"], required=p.get("required", False), description=p.get("description"), schema_=p["schema"]
            )
            for p in operation.get("parameters", [])
            if p["in"] == "query" and p["name"] not in ("model", "version", "format")
        ]
        methods.append(
            ExplainMethodOut(
                name=path.removeprefix(router.prefix + "/"),
                path=path,
                summary=operation["summary"],
                parameters=parameters,
            )
        )
    return ExplainMethodsResponse(methods=methods)


def steps_within_cap(default: int) -> Callable[..., Any]:
    """A dependency for `steps` with this method's default, bounded by the server's cap. A
    default above a lower cap (MINDSCOPE_MAX_STEPS set below it) becomes the cap."""

    async def steps_query(settings: Settings, steps: int | None = None) -> int:
        chosen = min(default, settings.max_steps) if steps is None else steps
        return settings_cap("steps", chosen, MIN_STEPS, settings.max_steps, "MINDSCOPE_MAX_STEPS")

    # Real objects, not the strings `from __future__ import annotations` leaves: the description
    # names this method's default.
    description = (
        f"points of the path, from 2 to the server's cap (MINDSCOPE_MAX_STEPS); default {default}, "
        "or the cap where it is lower"
    )
    steps_query.__annotations__ = {
        "settings": SettingsDep,
        "steps": Annotated[int | None, Query(description=description)],
        "return": int,
    }
    return steps_query


StepsDep = Annotated[int, Depends(steps_within_cap(50))]


EVALUATIONS = ("deletion", "insertion", "sanity")


@dataclass(frozen=True)
class Evaluate:
    """The scores `evaluate` asks for, computed on any attribution map (engine/explain/evaluation.py)."""

    asked: tuple[str, ...] = ()
    steps: int = 16

    def untrained(self, loaded: LoadedModel) -> LoadedModel | None:
        """The model on its initial weights when the sanity check is asked (404 if it has none)."""
        return loaded.initial_model() if "sanity" in self.asked else None

    def run(
        self,
        loaded: LoadedModel,
        image: np.ndarray,
        index: int,
        attributions: np.ndarray,
        recompute: Callable[[LoadedModel], np.ndarray] | None,
        rows_per_chunk: int,
    ) -> EvaluationOut | None:
        """`recompute(model)`: the same method's map on another model (the untrained one, for sanity)."""
        if not self.asked:
            return None
        curves = {}
        for kind in CURVES:
            if kind in self.asked:
                found = curve(
                    loaded.predict, image, np.zeros_like(image), attributions, index, kind, self.steps, rows_per_chunk
                )
                curves[kind] = CurveOut(
                    fractions=found.fractions.tolist(), scores=found.scores.tolist(), area=found.area
                )
        sanity = None
        initial = self.untrained(loaded)
        if initial is not None and recompute is not None:
            untrained = recompute(initial)
            sanity = SanityOut(rank_correlation=spearman(attributions, untrained), target=index)
        return EvaluationOut(**curves, sanity=sanity)


async def evaluation_request(
    evaluate: Annotated[
        list[str] | None,
        Query(
            max_length=8,
            description="scores of the map, comma-separated or repeated: deletion, insertion (probability curves "
            "and their areas), sanity (rank correlation with the same method on the untrained model)",
        ),
        CommaSeparated,
    ] = None,
    evaluate_steps: Annotated[int, Query(ge=2, le=256, description="points of the deletion/insertion curves")] = 16,
) -> Evaluate:
    asked = tuple(dict.fromkeys(evaluate or ()))
    unknown = [part for part in asked if part not in EVALUATIONS]
    if unknown:
        raise InvalidInput(f"unknown evaluation {unknown[0]!r}", valid_evaluations=list(EVALUATIONS))
    return Evaluate(asked, evaluate_steps)


EvaluateDep = Annotated[Evaluate, Depends(evaluation_request)]


async def smoothing_within_caps(
    settings: SettingsDep,
    samples: Annotated[
        int, Query(description="SmoothGrad: noisy copies to average, 0 (off) to the cap (MINDSCOPE_MAX_SAMPLES)")
    ] = 0,
    noise: Annotated[float, Query(gt=0, le=1, description="SmoothGrad: noise sigma / (max - min of the image)")] = 0.15,
    smooth: Annotated[
        Literal["mean", "square", "var"],
        Query(description="SmoothGrad: how samples combine: mean (SmoothGrad), square (SquareGrad), var (VarGrad)"),
    ] = "mean",
    seed: Annotated[int, Query(ge=0, le=2**32 - 1, description="SmoothGrad: the noise's seed")] = 0,
) -> Smoothing:
    settings_cap("samples", samples, 0, settings.max_samples, "MINDSCOPE_MAX_SAMPLES")
    return Smoothing(samples, noise, smooth, seed)


SmoothingDep = Annotated[Smoothing, Depends(smoothing_within_caps)]


@router.post(
    "/integrated-gradients",
    response_model=IntegratedGradientsResponse,
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={
        **ERROR_RESPONSES,
        200: {
            **PNG_RESPONSE,
            "headers": {name: {"description": text, "schema": {"type": "string"}} for name, text in IG_HEADERS.items()},
        },
    },
    summary="Integrated gradients of the target class's probability or logit, with a completeness check",
)
def explain_integrated_gradients(
    request: Request,
    loaded: ModelDep,
    decoded: DecodedDep,
    settings: SettingsDep,
    steps: StepsDep,
    evaluate: EvaluateDep,
    smoothing: SmoothingDep,
    target: TargetQuery = None,
    score: ScoreQuery = "probability",
    method: Method = "gauss_legendre",
    baseline: Literal["black", "white", "blur", "uniform-noise", "upload"] = "black",
    tolerance: Annotated[
        float | None, Query(gt=0, lt=1, description="refine (doubling steps) until relative delta <= this")
    ] = None,
    sign: Sign = "all",
    clip_percentile: Annotated[float, Query(ge=50, le=100)] = 99.0,
    format: FormatQuery = None,
) -> IntegratedGradientsResponse | Response:
    image = decoded.single()
    evaluate.untrained(loaded)  # a sanity check without initial weights is refused before any work
    if baseline == "upload":
        if decoded.baseline is None:
            raise InvalidInput("baseline=upload needs a baseline image (multipart field or JSON 'baseline')")
        baseline_pixels = decoded.baseline.pixels
    else:
        baseline_pixels = make_baseline(baseline, image.pixels)

    rows = max(1, smoothing.samples) * steps
    if rows > settings.max_rows:
        raise InvalidInput(
            f"samples x steps = {rows} model rows; at most {settings.max_rows} (MINDSCOPE_MAX_ROWS) are computed "
            "for one explanation: ask for fewer samples or steps",
            rows=rows,
            max_rows=settings.max_rows,
        )

    def integrate(model: LoadedModel, index: int | None) -> IntegratedGradientsResult:
        return smoothed_attribute(
            model.gradients_for(score),
            image.pixels,
            smoothing,
            target=index,
            baseline=baseline_pixels,
            steps=steps,
            method=method,
            internal_batch_size=settings.internal_batch_size,
            tolerance=tolerance,
            max_steps=settings.max_steps,
        )

    result = integrate(loaded, loaded.target_for(image.pixels, target))
    evaluation = evaluate.run(
        loaded,
        image.pixels,
        result.target,
        result.attributions,
        lambda untrained: integrate(untrained, result.target).attributions,
        settings.internal_batch_size,
    )
    reached = None if tolerance is None else _tolerance(result, tolerance, settings.max_steps)
    if wants_png(request, format):
        label = loaded.class_names[result.target]
        caption = AttributionCaption(label, result.output_at_input, method, result.steps, result.relative_delta, score)
        if smoothing.samples:
            at_input = result.scores[result.target]
            caption = replace(
                caption,
                headline=f"Integrated gradients: why '{label}' ({caption.symbol} = {at_input:.3f}) - {method}, "
                f"{result.steps} steps, SmoothGrad of {smoothing.samples} samples, noise {smoothing.noise:g}, "
                f"completeness error {result.relative_delta:.1e}",
            )
        response = picture_response(
            attribution_figure(image.pixels, result.attributions, caption, sign, clip_percentile, trust_of(evaluation))
        )
        response.headers.update(_summary_headers(result, loaded.class_names[result.target], reached))
        return response
    return IntegratedGradientsResponse(
        target=TargetOut(index=result.target, label=loaded.class_names[result.target]),
        score=score,
        method=method,
        baseline=baseline,
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
        evaluation=evaluation,
        probabilities=ArrayPayload.of(result.scores if score == "probability" else softmax(result.scores)),
        classes=list(loaded.class_names),
        input=image.info,
        model=model_ref(loaded),
    )


def trust_of(evaluation: EvaluationOut | None) -> Trust | None:
    """The scores `evaluate` asked for, as the PNG's fourth panel draws them."""
    if evaluation is None:
        return None
    curves = tuple(
        TrustCurve(kind, found.fractions, found.scores, found.area)
        for kind, found in (("deletion", evaluation.deletion), ("insertion", evaluation.insertion))
        if found is not None
    )
    return Trust(curves, None if evaluation.sanity is None else evaluation.sanity.rank_correlation)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores.astype(np.float64) - scores.max())
    return (shifted / shifted.sum()).astype(np.float32)


def _tolerance(result: IntegratedGradientsResult, requested: float, max_steps: int) -> ToleranceOut:
    return ToleranceOut(
        requested=requested,
        met=result.relative_delta <= requested,
        relative_delta=result.relative_delta,
        max_steps=max_steps,
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


@router.post(
    "/interior-gradients",
    response_model=InteriorGradientsResponse,
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={**ERROR_RESPONSES, 200: PNG_RESPONSE},
    summary="Gradients of the target's probability or logit at scaled inputs alpha * x (interior gradients)",
)
def explain_interior_gradients(
    request: Request,
    loaded: ModelDep,
    decoded: DecodedDep,
    settings: SettingsDep,
    target: TargetQuery = None,
    score: ScoreQuery = "probability",
    alphas: Annotated[
        list[float] | None,
        Query(description="in (0, 1], comma-separated or repeated, up to the server's cap (MINDSCOPE_MAX_ALPHAS)"),
        CommaSeparated,
    ] = None,
    format: FormatQuery = None,
) -> InteriorGradientsResponse | Response:
    image = decoded.single()
    alpha_values = np.asarray(alphas if alphas else [0.02, 0.04, 0.06, 0.08, 0.1, 0.2, 0.5, 1.0])
    settings_cap("alphas", len(alpha_values), 1, settings.max_alphas, "MINDSCOPE_MAX_ALPHAS", unit="values")
    if not ((alpha_values > 0) & (alpha_values <= 1)).all():
        raise InvalidInput("every alpha must be in (0, 1]", alphas=alpha_values.tolist())
    result = interior_gradients(
        loaded.gradients_for(score),
        image.pixels,
        alpha_values,
        target=loaded.target_for(image.pixels, target),
        internal_batch_size=settings.internal_batch_size,
    )
    if wants_png(request, format):
        label = loaded.class_names[result.target]
        picture = interior_strip(image.pixels, result.alphas, result.gradients, result.outputs, label, score)
        return picture_response(picture)
    return InteriorGradientsResponse(
        target=TargetOut(index=result.target, label=loaded.class_names[result.target]),
        score=score,
        alphas=ArrayPayload.of(result.alphas),
        outputs=ArrayPayload.of(result.outputs),
        gradients=ArrayPayload.of(result.gradients),
        input=image.info,
        model=model_ref(loaded),
    )


# Every other method: one engine call each, one answer shape (ExplanationResponse), the same
# target, score, SmoothGrad and picture options (`MethodRequest`).


Compute = Callable[[LoadedModel, np.ndarray, int], Explanation]  # (model, image, target) -> its map
TITLES = {
    "vanilla-gradients": "Vanilla gradients",
    "gradient-x-input": "Gradient x input",
    "grad-cam": "Grad-CAM",
    "occlusion": "Occlusion",
    "blur-ig": "Blur integrated gradients",
    "guided-ig": "Guided integrated gradients",
    "xrai": "XRAI regions",
}


@dataclass
class MethodRequest:
    """What every method's request carries besides its own parameters, and how it is answered."""

    request: Request
    loaded: LoadedModel
    decoded: DecodedRequest
    settings: Settings
    target: str | None
    score: str
    clip_percentile: float
    format: str | None
    evaluate: Evaluate

    @property
    def rows_per_chunk(self) -> int:
        return self.settings.internal_batch_size

    def within_cap(self, rows: int, what: str) -> None:
        settings_cap("rows", rows, 1, self.settings.max_rows, "MINDSCOPE_MAX_ROWS", unit=f"model rows ({what})")

    def answer(self, compute: Compute, sign: Sign) -> ExplanationResponse | Response:
        """Resolve the target, run `compute(model, image, target)` (and the scores `evaluate` asks
        for), and answer JSON or a PNG."""
        image, loaded = self.decoded.single(), self.loaded
        loaded.gradients_for(self.score)  # an unavailable score is refused before any work
        self.evaluate.untrained(loaded)  # a sanity check without initial weights is refused before any work
        probabilities = loaded.predict(image.pixels[None])[0]
        index = int(np.argmax(probabilities)) if self.target is None else loaded.class_index(self.target)
        started = time.perf_counter()
        result = compute(loaded, image.pixels, index)
        evaluation = self.evaluate.run(
            loaded,
            image.pixels,
            index,
            result.attributions,
            lambda m: compute(m, image.pixels, index).attributions,
            self.rows_per_chunk,
        )
        seconds = time.perf_counter() - started
        label = loaded.class_names[index]
        if wants_png(self.request, self.format):
            summary = ", ".join(
                f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                for k, v in result.details.items()
                if not isinstance(v, dict) and k != "output_at_input"  # the title gives p already
            )
            smoothing = result.details.get("smoothing")
            if smoothing:
                kind = {"mean": "SmoothGrad", "square": "SquareGrad", "var": "VarGrad"}[smoothing["kind"]]
                smoothed = f"{kind} of {smoothing['samples']} samples, noise {smoothing['noise']:g}"
                summary = f"{summary}, {smoothed}" if summary else smoothed
            headline = f"{TITLES[result.method]}: why '{label}' (p = {probabilities[index]:.3f})"
            caption = AttributionCaption(
                label,
                float(probabilities[index]),
                result.method,
                0,
                0.0,
                self.score,
                headline=headline + (f" - {summary}" if summary else ""),
                values=result.values,
            )
            figure = attribution_figure(
                image.pixels, result.attributions, caption, sign, self.clip_percentile, trust_of(evaluation)
            )
            return picture_response(figure)
        return ExplanationResponse(
            method=result.method,
            target=TargetOut(index=index, label=label),
            score=self.score,
            attributions=ArrayPayload.of(result.attributions),
            parameters=result.details,
            values=result.values or f"attribution to the target's {self.score}",
            regions=None if result.regions is None else ArrayPayload.of(result.regions),
            evaluations=EvaluationsOut(gradient=result.gradient_evaluations, forward=result.forward_evaluations + 1),
            evaluation=evaluation,
            seconds=seconds,
            probabilities=ArrayPayload.of(probabilities),
            classes=list(loaded.class_names),
            input=image.info,
            model=model_ref(loaded),
        )


async def method_request(
    request: Request,
    loaded: ModelDep,
    decoded: DecodedDep,
    settings: SettingsDep,
    evaluate: EvaluateDep,
    target: TargetQuery = None,
    score: ScoreQuery = "probability",
    clip_percentile: Annotated[
        float, Query(ge=50, le=100, description="PNG: colours clip at this percentile of |value|")
    ] = 99.0,
    format: FormatQuery = None,
) -> MethodRequest:
    return MethodRequest(request, loaded, decoded, settings, target, score, clip_percentile, format, evaluate)


MethodDep = Annotated[MethodRequest, Depends(method_request)]
METHOD_ROUTE: dict[str, Any] = {
    "response_model": ExplanationResponse,
    "openapi_extra": IMAGE_REQUEST_BODY,
    "responses": {**ERROR_RESPONSES, 200: PNG_RESPONSE},
}


@router.post("/vanilla-gradients", **METHOD_ROUTE, summary="Vanilla gradients: d score / d pixel (SmoothGrad: samples)")
def explain_vanilla_gradients(
    call: MethodDep, smoothing: SmoothingDep, sign: Sign = "absolute"
) -> ExplanationResponse | Response:
    call.within_cap(max(1, smoothing.samples), "samples")
    return call.answer(
        lambda m, image, index: vanilla_gradients(
            m.gradients_for(call.score), image, index, smoothing, call.rows_per_chunk
        ),
        sign,
    )


@router.post("/gradient-x-input", **METHOD_ROUTE, summary="Gradient x input: each pixel's gradient times its value")
def explain_gradient_x_input(
    call: MethodDep, smoothing: SmoothingDep, sign: Sign = "all"
) -> ExplanationResponse | Response:
    call.within_cap(max(1, smoothing.samples), "samples")
    return call.answer(
        lambda m, image, index: vanilla_gradients(
            m.gradients_for(call.score), image, index, smoothing, call.rows_per_chunk, True
        ),
        sign,
    )


@router.post(
    "/grad-cam",
    **METHOD_ROUTE,
    summary="Grad-CAM: a layer's channels weighted by their mean gradient, kept where positive, upsampled",
)
def explain_grad_cam(
    call: MethodDep,
    smoothing: SmoothingDep,
    layer: Annotated[
        str | None,
        Query(max_length=200, description="a layer of the model with a spatial output; default: the last one"),
    ] = None,
) -> ExplanationResponse | Response:
    call.within_cap(max(1, smoothing.samples), "samples")
    outer = [info.name for info in call.loaded.layers if "/" not in info.name]
    name = outer[-1] if layer is None else call.loaded.layer(layer).name
    call.loaded.layer_gradients(name, call.score)  # a layer inside a nested model is refused here
    return call.answer(
        lambda m, image, index: grad_cam(
            m.layer_gradients(name, call.score), name, image, index, smoothing, call.rows_per_chunk
        ),
        "positive",
    )


@router.post(
    "/occlusion",
    **METHOD_ROUTE,
    summary="Occlusion: how much the target's probability falls when a patch covers each pixel",
)
def explain_occlusion(
    call: MethodDep,
    size: Annotated[int, Query(ge=1, description="the patch's height and width in pixels")] = 4,
    stride: Annotated[int, Query(ge=1, description="pixels between patches (1: every position, as PAIR)")] = 1,
    value: Annotated[float, Query(ge=0, le=1, description="the patch's pixel value, 0 (black) to 1 (white)")] = 0.0,
) -> ExplanationResponse | Response:
    if call.score != "probability":
        raise InvalidInput("occlusion measures the fall of the target's probability; use score=probability")
    height, width, _ = call.loaded.input_shape
    settings_cap("size", size, 1, min(height, width), "the model's input size")
    call.within_cap(len(windows(height, width, size, stride)), "patches")
    return call.answer(
        lambda m, image, index: occlusion(m.predict, image, index, size, stride, value, call.rows_per_chunk), "all"
    )


@router.post(
    "/blur-ig",
    **METHOD_ROUTE,
    summary="Blur integrated gradients: integrated gradients along ever stronger Gaussian blurs (Xu et al. 2020)",
)
def explain_blur_ig(
    call: MethodDep,
    smoothing: SmoothingDep,
    steps: Annotated[int, Depends(steps_within_cap(100))],
    max_sigma: Annotated[float, Query(gt=0, le=100, description="the strongest blur, in pixels")] = 50.0,
    sqrt: Annotated[bool, Query(description="space the blur levels by their square roots")] = False,
    sign: Sign = "all",
) -> ExplanationResponse | Response:
    call.within_cap(max(1, smoothing.samples) * steps, "samples x steps")
    return call.answer(
        lambda m, image, index: blur_integrated_gradients(
            m.gradients_for(call.score),
            image,
            index,
            steps,
            max_sigma,
            sqrt=sqrt,
            smoothing=smoothing,
            internal_batch_size=call.rows_per_chunk,
        ),
        sign,
    )


@router.post(
    "/guided-ig",
    **METHOD_ROUTE,
    summary="Guided integrated gradients: along a path that moves the least important pixels first "
    "(Kapishnikov et al. 2021)",
)
def explain_guided_ig(
    call: MethodDep,
    smoothing: SmoothingDep,
    steps: Annotated[int, Depends(steps_within_cap(200))],
    fraction: Annotated[float, Query(gt=0, le=1, description="share of features moved at a time")] = 0.25,
    max_dist: Annotated[
        float, Query(ge=0, le=1, description="how far (fraction of the way) a feature may stray from the straight line")
    ] = 0.02,
    baseline: Literal["black", "white", "blur", "uniform-noise"] = "black",
    sign: Sign = "all",
) -> ExplanationResponse | Response:
    call.within_cap(max(1, smoothing.samples) * steps, "samples x steps")
    return call.answer(
        lambda m, image, index: guided_integrated_gradients(
            m.gradients_for(call.score),
            image,
            index,
            make_baseline(baseline, image),
            steps,
            fraction,
            max_dist,
            smoothing,
            call.rows_per_chunk,
        ),
        sign,
    )


@router.post(
    "/xrai",
    **METHOD_ROUTE,
    summary="XRAI: integrated gradients (black and white baselines) gathered over image regions, ranked",
)
def explain_xrai(
    call: MethodDep,
    steps: Annotated[int, Depends(steps_within_cap(32))],
    min_pixel_diff: Annotated[
        int, Query(ge=1, le=10_000, description="a region must add at least this many new pixels")
    ] = 50,
) -> ExplanationResponse | Response:
    call.within_cap(2 * steps, "2 baselines x steps")
    return call.answer(
        lambda m, image, index: xrai(
            m.gradients_for(call.score), image, index, steps, min_pixel_diff, call.rows_per_chunk
        ),
        "all",
    )
