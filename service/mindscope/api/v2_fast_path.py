"""`POST /v2/models/{name}[/versions/{v}]/infer`, answered in front of FastAPI.

The Open Inference Protocol's inference request, like `/predict`'s raw body
(`api.predict_fast_path`), skips routing, dependency solving and the exception middlewares: the
same API-key check, model lookup, `answer_infer` and `{"error"}` bodies as the route, which answers
it whenever this does not (a query string). It sits inside the request-id, body-size and lifetime
middlewares, so those apply to it unchanged.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, State
from starlette.types import ASGIApp, Receive, Scope, Send

from mindscope.api.codecs import read_body
from mindscope.api.protocol_errors import protocol_error
from mindscope.api.routes.v2 import HEADER_LENGTH, answer_infer, model_infer, protocol_model, router
from mindscope.dataplane.access import check_api_key
from mindscope.errors import MindscopeError

INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")


class V2InferFastPath:
    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state
        # reported as the matched routes in logs and metrics, as FastAPI would
        routes = [r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is model_infer]
        self.plain, self.versioned = sorted(routes, key=lambda r: "{version}" in r.path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = INFER.match(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] != "POST" or scope["query_string"] or len(found["name"]) > 64:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.versioned if found["version"] is not None else self.plain
        try:
            headers = Headers(scope=scope)
            check_api_key(headers, self.state.settings)
            loaded = await protocol_model(self.state.registry, found["name"], found["version"])
            body = await read_body(Request(scope, receive))
            response = await answer_infer(
                loaded, body, headers.get(HEADER_LENGTH), self.state.settings, self.state.decode_budget
            )
        except MindscopeError as exc:
            response = protocol_error(exc.status_code, exc.message, exc.headers or None)
        await response(scope, receive, send)
