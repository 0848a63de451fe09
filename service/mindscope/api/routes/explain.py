from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from mindscope.api.codecs import IMAGE_REQUEST_BODY, wants_png
from mindscope.api.deps import DecodedDep, FormatQuery, ModelDep, SettingsDep
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, model_ref, png
from mindscope.api.schemas import (
    ArrayPayload,
    Completeness,
    IntegratedGradientsResponse,
    InteriorGradientsResponse,
    TargetOut,
)
from mindscope.engine.integrated_gradients import (
    IntegratedGradientsResult,
    attribute,
    interior_gradients,
    make_baseline,
)
from mindscope.engine.quadrature import RULES
from mindscope.errors import InvalidInput
from mindscope.render.heatmaps import Sign, attribution_figure, interior_strip

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
}


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
    target: TargetQuery = None,
    steps: Annotated[int, Query(ge=2, le=4096, description="quadrature points (capped by the server)")] = 50,
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
    if steps > settings.max_steps:
        raise InvalidInput(f"steps must be at most {settings.max_steps}", max_steps=settings.max_steps)
    if baseline == "upload":
        if decoded.baseline is None:
            raise InvalidInput("baseline=upload needs a baseline image (multipart field or JSON 'baseline')")
        baseline_pixels = decoded.baseline.pixels
    else:
        baseline_pixels = make_baseline(baseline, image.pixels)
    result = attribute(
        loaded.gradients,
        image.pixels,
        target=None if target is None else loaded.class_index(target),
        baseline=baseline_pixels,
        steps=steps,
        method=method,
        internal_batch_size=settings.internal_batch_size,
        tolerance=tolerance,
        max_steps=settings.max_steps,
    )
    if wants_png(request, format):
        response = png(attribution_figure(image.pixels, result.attributions, sign, clip_percentile))
        response.headers.update(_summary_headers(result, loaded.class_names[result.target]))
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
        probabilities=ArrayPayload.of(result.probabilities),
        classes=list(loaded.class_names),
        input=image.info,
        model=model_ref(loaded),
    )


def _summary_headers(result: IntegratedGradientsResult, label: str) -> dict[str, str]:
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
    return {
        name: repr(value) if isinstance(value, float) else str(value)
        for name, value in zip(IG_HEADERS, values, strict=True)
    }


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
    alphas: Annotated[list[float] | None, Query(max_length=64, description="in (0, 1]")] = None,
    format: FormatQuery = None,
) -> InteriorGradientsResponse | Response:
    image = decoded.single()
    alpha_values = np.asarray(alphas if alphas else [0.02, 0.04, 0.06, 0.08, 0.1, 0.2, 0.5, 1.0])
    if len(alpha_values) > settings.max_alphas or not ((alpha_values > 0) & (alpha_values <= 1)).all():
        raise InvalidInput(f"give 1-{settings.max_alphas} alphas in (0, 1]", max_alphas=settings.max_alphas)
    result = interior_gradients(
        loaded.gradients,
        image.pixels,
        alpha_values,
        target=None if target is None else loaded.class_index(target),
        internal_batch_size=settings.internal_batch_size,
    )
    if wants_png(request, format):
        return png(interior_strip(result.alphas, result.gradients, result.outputs))
    return InteriorGradientsResponse(
        target=TargetOut(index=result.target, label=loaded.class_names[result.target]),
        alphas=ArrayPayload.of(result.alphas),
        outputs=ArrayPayload.of(result.outputs),
        gradients=ArrayPayload.of(result.gradients),
        input=image.info,
        model=model_ref(loaded),
    )
