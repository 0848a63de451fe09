from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from mindscope.api.codecs import IMAGE_REQUEST_BODY, DecodedRequest, wants_png
from mindscope.api.deps import DecodedDep, FormatQuery, ModelDep
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, json_response, model_ref, picture_response
from mindscope.api.schemas import ArrayPayload, BatchPredictResponse, Prediction, PredictResponse
from mindscope.engine.loaded_model import LoadedModel
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
    return await answer_prediction(loaded, decoded, wants_png(request, format))


async def answer_prediction(loaded: LoadedModel, decoded: DecodedRequest, png: bool) -> Response:
    """Run the decoded images through the batched model and answer: JSON, or the bar chart.
    The route and the fast path (`api.predict_fast_path`) both answer through here."""
    probabilities = await loaded.predict_async(np.stack([image.pixels for image in decoded.images]))
    if png:
        return picture_response(await run_in_threadpool(probability_chart, probabilities[0], loaded.class_names))
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
