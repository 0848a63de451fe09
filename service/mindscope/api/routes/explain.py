from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from mindscope.api.codecs import IMAGE_REQUEST_BODY, wants_png
from mindscope.api.deps import DecodedDep, FormatQuery, ModelDep, SettingsDep, settings_cap
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, model_ref, picture_response
from mindscope.api.schemas import (
    ArrayPayload,
    Completeness,
    ExplainMethodOut,
    ExplainMethodsResponse,
    IntegratedGradientsResponse,
    InteriorGradientsResponse,
    ParameterOut,
    TargetOut,
    ToleranceOut,
)
from mindscope.engine.integrated_gradients import (
    IntegratedGradientsResult,
    attribute,
    interior_gradients,
    make_baseline,
)
from mindscope.engine.quadrature import RULES
from mindscope.errors import InvalidInput
from mindscope.render.heatmaps import AttributionCaption, Sign, attribution_figure, interior_strip

router = APIRouter(prefix="/explain", tags=["explain"])
Method = Literal["riemann_left", "riemann_right", "riemann_midpoint", "riemann_trapezoid", "gauss_legendre"]
assert set(Method.__args__) == set(RULES)  # type: ignore[attr-defined]
TargetQuery = Annotated[
    str | None, Query(max_length=64, description="class index or name; default: the predicted class")
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


async def steps_within_cap(
    settings: SettingsDep,
    steps: Annotated[
        int, Query(description="quadrature points, from 2 to the server's cap (MINDSCOPE_MAX_STEPS)")
    ] = 50,
) -> int:
    return settings_cap("steps", steps, MIN_STEPS, settings.max_steps, "MINDSCOPE_MAX_STEPS")


StepsDep = Annotated[int, Depends(steps_within_cap)]


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
    summary="Integrated gradients of the target class's probability, with a completeness check",
)
def explain_integrated_gradients(
    request: Request,
    loaded: ModelDep,
    decoded: DecodedDep,
    settings: SettingsDep,
    steps: StepsDep,
    target: TargetQuery = None,
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
    if baseline == "upload":
        if decoded.baseline is None:
            raise InvalidInput("baseline=upload needs a baseline image (multipart field or JSON 'baseline')")
        baseline_pixels = decoded.baseline.pixels
    else:
        baseline_pixels = make_baseline(baseline, image.pixels)
    result = attribute(
        loaded.gradients,
        image.pixels,
        target=loaded.target_for(image.pixels, target),
        baseline=baseline_pixels,
        steps=steps,
        method=method,
        internal_batch_size=settings.internal_batch_size,
        tolerance=tolerance,
        max_steps=settings.max_steps,
    )
    reached = None if tolerance is None else _tolerance(result, tolerance, settings.max_steps)
    if wants_png(request, format):
        label = loaded.class_names[result.target]
        caption = AttributionCaption(label, result.output_at_input, method, result.steps, result.relative_delta)
        response = picture_response(
            attribution_figure(image.pixels, result.attributions, caption, sign, clip_percentile)
        )
        response.headers.update(_summary_headers(result, loaded.class_names[result.target], reached))
        return response
    return IntegratedGradientsResponse(
        target=TargetOut(index=result.target, label=loaded.class_names[result.target]),
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
        probabilities=ArrayPayload.of(result.probabilities),
        classes=list(loaded.class_names),
        input=image.info,
        model=model_ref(loaded),
    )


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
    summary="Gradients at scaled inputs alpha * x (interior gradients)",
)
def explain_interior_gradients(
    request: Request,
    loaded: ModelDep,
    decoded: DecodedDep,
    settings: SettingsDep,
    target: TargetQuery = None,
    alphas: Annotated[
        list[float] | None, Query(description="in (0, 1], up to the server's cap (MINDSCOPE_MAX_ALPHAS)")
    ] = None,
    format: FormatQuery = None,
) -> InteriorGradientsResponse | Response:
    image = decoded.single()
    alpha_values = np.asarray(alphas if alphas else [0.02, 0.04, 0.06, 0.08, 0.1, 0.2, 0.5, 1.0])
    settings_cap("alphas", len(alpha_values), 1, settings.max_alphas, "MINDSCOPE_MAX_ALPHAS", unit="values")
    if not ((alpha_values > 0) & (alpha_values <= 1)).all():
        raise InvalidInput("every alpha must be in (0, 1]", alphas=alpha_values.tolist())
    result = interior_gradients(
        loaded.gradients,
        image.pixels,
        alpha_values,
        target=loaded.target_for(image.pixels, target),
        internal_batch_size=settings.internal_batch_size,
    )
    if wants_png(request, format):
        label = loaded.class_names[result.target]
        return picture_response(interior_strip(image.pixels, result.alphas, result.gradients, result.outputs, label))
    return InteriorGradientsResponse(
        target=TargetOut(index=result.target, label=loaded.class_names[result.target]),
        alphas=ArrayPayload.of(result.alphas),
        outputs=ArrayPayload.of(result.outputs),
        gradients=ArrayPayload.of(result.gradients),
        input=image.info,
        model=model_ref(loaded),
    )
