from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, State
from starlette.types import ASGIApp, Receive, Scope, Send

from mindscope.api.codecs import (
    IMAGE_REQUEST_BODY,
    IMAGE_TYPES,
    DecodedRequest,
    accepts_png,
    content_type,
    decode_raw_body,
    wants_png,
)
from mindscope.api.deps import DecodedDep, FormatQuery, ModelDep, check_api_key
from mindscope.api.errors import ERROR_RESPONSES, domain_error_response
from mindscope.api.responses import PNG_RESPONSE, json_response, model_ref, png
from mindscope.api.schemas import ArrayPayload, BatchPredictResponse, Prediction, PredictResponse
from mindscope.config import Settings
from mindscope.engine.runtime import LoadedModel, ModelRegistry
from mindscope.errors import MindscopeError
from mindscope.render.charts import probability_chart

router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictResponse | BatchPredictResponse,
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={**ERROR_RESPONSES, 200: PNG_RESPONSE},
    summary="Classify an image (or a JSON batch of instances)",
)
async def predict_image(
    request: Request, loaded: ModelDep, decoded: DecodedDep, format: FormatQuery = None
) -> PredictResponse | BatchPredictResponse | Response:
    # A coroutine, unlike the other routes: the hot path of the service waits for its batch
    # without a worker thread, and answers without FastAPI validating its own response again.
    probabilities = await loaded.predict_async(np.stack([image.pixels for image in decoded.images]))
    if wants_png(request, format):
        return png(await run_in_threadpool(probability_chart, probabilities[0], loaded.class_names))
    return json_response(predictions_out(loaded, probabilities, decoded))


def predictions_out(
    loaded: LoadedModel, probabilities: np.ndarray, decoded: DecodedRequest
) -> PredictResponse | BatchPredictResponse:
    """probabilities: float32 (N, classes), one row per decoded image."""
    fields = [
        {
            "label": loaded.class_names[int(np.argmax(row))],
            "class_index": int(np.argmax(row)),
            "confidence": float(np.max(row)),
            "probabilities": ArrayPayload.of(row),
            "classes": list(loaded.class_names),
            "input": image.info,
        }
        for row, image in zip(probabilities, decoded.images, strict=True)
    ]
    if decoded.batch:
        return BatchPredictResponse(predictions=[Prediction(**one) for one in fields], model=model_ref(loaded))
    return PredictResponse(**fields[0], model=model_ref(loaded))


class PredictFastPath:
    """Answers the service's hot request, `POST /predict` with a raw image body, no query and a
    JSON answer, in front of FastAPI: routing, dependency solving and the exception middlewares
    cost the event loop more than the request's own work (decode, batch, JSON), and on a 2-core
    machine that CPU is the model's (docs/benchmarks.md).

    Same API-key check, codec, engine call, response and error envelope as `predict_image`,
    which still answers and documents every other request (queries, multipart or JSON bodies,
    PNG answers, a model not loaded yet). It sits inside the request-id, body-size and lifetime
    middlewares, so those apply to it unchanged.
    """

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state
        # reported as the matched route in logs and metrics, as FastAPI would
        self.route = next(route for route in router.routes if getattr(route, "endpoint", None) is predict_image)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        loaded = self._serving(scope, headers)
        if loaded is None:  # not ours: the FastAPI route answers it
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        settings: Settings = self.state.settings
        try:
            check_api_key(headers, settings)
            decoded = await decode_raw_body(await Request(scope, receive).body(), settings.max_image_pixels)
            probabilities = await loaded.predict_async(decoded.images[0].pixels[None])
            response = json_response(predictions_out(loaded, probabilities, decoded))
        except MindscopeError as exc:
            response = domain_error_response(exc)
        await response(scope, receive, send)

    def _serving(self, scope: Scope, headers: Headers) -> LoadedModel | None:
        """The default model when this request is one the fast path answers, else None."""
        if scope["path"] != "/predict" or scope["method"] != "POST" or scope["query_string"]:
            return None
        if content_type(headers) not in IMAGE_TYPES or accepts_png(headers):
            return None
        registry: ModelRegistry = self.state.registry
        return registry.serving_for()
