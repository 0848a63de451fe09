"""POST /explain/{method} for every method of the registry, and GET /explain listing them: routes
generated from `engine.explain.registry`, each resolving its dependencies, calling the runner once
and mapping the result (`api.explanations`). Interior gradients, which answer gradients at scaled
inputs rather than one map, have their own route below."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from mindscope.api.codecs import IMAGE_REQUEST_BODY, wants_png
from mindscope.api.deps import DecodedDep, FormatQuery, ModelDep, SettingsDep, settings_cap
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.explanations import IG_HEADERS, Answering, answer
from mindscope.api.responses import PNG_RESPONSE, model_ref, picture_response
from mindscope.api.routes.jobs import accepted
from mindscope.api.schemas import (
    ArrayPayload,
    ExplainMethodOut,
    ExplainMethodsResponse,
    ExplanationResponse,
    IntegratedGradientsResponse,
    InteriorGradientsResponse,
    ParameterOut,
    TargetOut,
)
from mindscope.dataplane.decoding import DecodedImage
from mindscope.dataplane.parameters import AskParameters, CommaSeparated, SmoothingParameters
from mindscope.engine.explain.explanation import NO_SMOOTHING
from mindscope.engine.explain.integrated_gradients import interior_gradients
from mindscope.engine.explain.method import Caps, Context, Method, Score, Sign
from mindscope.engine.explain.registry import METHODS
from mindscope.engine.explain.runner import explain
from mindscope.errors import InvalidInput
from mindscope.jobs.spec import JobRequest
from mindscope.render.heatmaps import interior_strip

router = APIRouter(prefix="/explain", tags=["explain"])
INTERIOR = "interior-gradients"

TargetQuery = Annotated[
    str | None, Query(max_length=64, description="class index or name; default: the predicted class")
]
ScoreQuery = Annotated[
    Score,
    Query(
        description="what to attribute: the target's probability, or its logit (pre-softmax score; for models "
        "that output logits or end in a separate softmax layer; GET /models/{name} lists a model's scores)"
    ),
]
ClipQuery = Annotated[float, Query(ge=50, le=100, description="PNG: colours clip at this percentile of |value|")]


def method_endpoint(method: Method) -> Callable[..., Any]:
    """The route of one method: its own parameters (a query model), SmoothGrad where it smooths, the
    picture's sign where it may be chosen, and what every method takes."""

    def endpoint(
        request: Request,
        loaded: Any,
        decoded: Any,
        settings: Any,
        ask: AskParameters,
        clip_percentile: float = 99.0,
        format: str | None = None,
        params: Any = None,
        smoothing: SmoothingParameters | None = None,
        sign: Sign | None = None,
    ) -> Any:
        image = decoded.single()
        if wants_async(request):
            return explain_as_job(request, loaded, method, image, ask, params, smoothing)
        baseline = None if decoded.baseline is None else decoded.baseline.pixels
        smoothed = NO_SMOOTHING if smoothing is None else smoothing.smoothing()
        context = Context(ask.score, smoothed, Caps.of(settings), baseline)
        chosen = params if params is not None else method.Params()
        explained = explain(loaded, method, image.pixels, chosen, ask.target, context, ask.evaluation())
        answering = Answering(wants_png(request, format), sign, clip_percentile)
        return answer(loaded, method, chosen, context, image, explained, answering)

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter("request", keyword, annotation=Request),
        inspect.Parameter("loaded", keyword, annotation=ModelDep),
        inspect.Parameter("decoded", keyword, annotation=DecodedDep),
        inspect.Parameter("settings", keyword, annotation=SettingsDep),
        inspect.Parameter("ask", keyword, annotation=Annotated[AskParameters, Query()]),
        inspect.Parameter("clip_percentile", keyword, annotation=ClipQuery, default=99.0),
        inspect.Parameter("format", keyword, annotation=FormatQuery, default=None),
    ]
    if method.Params.model_fields:
        parameters.append(inspect.Parameter("params", keyword, annotation=Annotated[method.Params, Query()]))
    if method.smooths:
        smoothing = Annotated[SmoothingParameters, Query()]
        parameters.append(inspect.Parameter("smoothing", keyword, annotation=smoothing, default=None))
    if method.signed:
        parameters.append(inspect.Parameter("sign", keyword, annotation=Sign, default=method.sign))
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = "explain_" + method.name.replace("-", "_")
    endpoint.__doc__ = method.summary
    return endpoint


def wants_async(request: Request) -> bool:
    """`Prefer: respond-async` (RFC 7240): answer 202 with a job instead of waiting."""
    preferences = ",".join(request.headers.getlist("prefer")).lower()
    return any(part.strip().split("=")[0] == "respond-async" for part in preferences.replace(";", ",").split(","))


def explain_as_job(
    request: Request,
    loaded: Any,
    method: Method,
    image: DecodedImage,
    ask: AskParameters,
    params: Any,
    smoothing: SmoothingParameters | None,
) -> Response:
    """The same explanation as a one-image job: 202 and its Location; GET /jobs/{id}/items/0
    answers what this route would have."""
    parameters = ask.model_dump(exclude_none=True, exclude_defaults=True)
    if params is not None:
        parameters |= params.model_dump(exclude_none=True, exclude_defaults=True)
    if smoothing is not None:
        parameters |= smoothing.model_dump(exclude_defaults=True)
    job = JobRequest(
        kind="explain", model=loaded.ref.name, version=loaded.ref.version, method=method.name, parameters=parameters
    )
    jobs = request.app.state.jobs
    return accepted(jobs, jobs.submit(job, images=[image], idempotency_key=request.headers.get("idempotency-key")))


def add_method_route(method: Method) -> None:
    png: dict[str, Any] = dict(PNG_RESPONSE)
    response_model: type = ExplanationResponse
    if method.answer == "integrated-gradients":
        png["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in IG_HEADERS.items()
        }
        response_model = IntegratedGradientsResponse
    router.add_api_route(
        f"/{method.name}",
        method_endpoint(method),
        methods=["POST"],
        response_model=response_model,
        openapi_extra=IMAGE_REQUEST_BODY,
        responses={**ERROR_RESPONSES, 200: png},
        summary=method.summary,
    )


@router.get("", response_model=ExplainMethodsResponse, summary="The explanation methods, their parameters and caps")
def list_explain_methods(request: Request) -> ExplainMethodsResponse:
    """Each method of the registry with its route's parameters as this server's OpenAPI schema
    states them, so the caps are the ones its Settings enforce."""
    paths = request.app.openapi()["paths"]
    methods = []
    for name in [m.name for m in METHODS] + [INTERIOR]:
        path = f"{router.prefix}/{name}"
        operation = paths[path]["post"]
        parameters = [
            ParameterOut(
                name=p["name"], required=p.get("required", False), description=p.get("description"), schema_=p["schema"]
            )
            for p in operation.get("parameters", [])
            if p["in"] == "query" and p["name"] not in ("model", "version", "format")
        ]
        methods.append(ExplainMethodOut(name=name, path=path, summary=operation["summary"], parameters=parameters))
    return ExplainMethodsResponse(methods=methods)


for registered in METHODS:
    add_method_route(registered)


@router.post(
    f"/{INTERIOR}",
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
    label = loaded.class_names[result.target]
    if wants_png(request, format):
        return picture_response(
            interior_strip(image.pixels, result.alphas, result.gradients, result.outputs, label, score)
        )
    return InteriorGradientsResponse(
        target=TargetOut(index=result.target, label=label),
        score=score,
        alphas=ArrayPayload.of(result.alphas),
        outputs=ArrayPayload.of(result.outputs),
        gradients=ArrayPayload.of(result.gradients),
        input=image.info,
        model=model_ref(loaded),
    )
