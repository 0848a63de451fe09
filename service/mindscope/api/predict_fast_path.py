"""`POST /predict` with a raw image body, answered in front of FastAPI.

The service's hot request (a raw image, no query, a JSON answer) skips routing, dependency solving
and the exception middlewares, which cost the event loop more than the request's own work
(decode, batch, JSON); on a 2-core machine that CPU is the model's (docs/benchmarks.md). It is a
shortcut through the route's own functions, not a second dispatcher: the same API-key check,
`serving_model`, codec, `answer_prediction` and error envelope as `predict_image`, which answers
every other form (queries, multipart or JSON bodies, PNG answers). It sits inside the request-id,
body-size and lifetime middlewares, so those apply to it unchanged.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, State
from starlette.types import ASGIApp, Receive, Scope, Send

from mindscope import tracing
from mindscope.api.codecs import accepts_png, content_type, read_body
from mindscope.api.errors import domain_error_response
from mindscope.api.routes.predict import answer_prediction, predict_image, router
from mindscope.config import Settings
from mindscope.dataplane.access import check_api_key
from mindscope.dataplane.decoding import IMAGE_TYPES, DecodeLimits, decode_raw_body
from mindscope.dataplane.models import serving_model
from mindscope.engine.registry import ModelRegistry
from mindscope.errors import MindscopeError


class PredictFastPath:
    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state
        # reported as the matched route in logs and metrics, as FastAPI would
        self.route = next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is predict_image)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_fast_predict(scope):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        settings: Settings = self.state.settings
        registry: ModelRegistry = self.state.registry
        try:
            check_api_key(Headers(scope=scope), settings)
            loaded = await serving_model(registry)
            limits = DecodeLimits(loaded.input_shape, settings.max_image_pixels, 1, self.state.decode_budget)
            body = await read_body(Request(scope, receive))
            with tracing.span("decode"):
                decoded = await decode_raw_body(body, limits)
            response = await answer_prediction(loaded, decoded, png=False)
        except MindscopeError as exc:
            response = domain_error_response(exc)
        await response(scope, receive, send)


def is_fast_predict(scope: Scope) -> bool:
    """POST /predict, no query string, a raw image body and a JSON answer."""
    if scope["path"] != "/predict" or scope["method"] != "POST" or scope["query_string"]:
        return False
    headers = Headers(scope=scope)
    return content_type(headers) in IMAGE_TYPES and not accepts_png(headers)
