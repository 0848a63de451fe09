"""Request ids, one JSON access-log line per request, Prometheus metrics at /metrics, and a trace
span per request when OpenTelemetry is configured (`mindscope.tracing`)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mindscope.dataplane.metrics import Metrics

access_log = logging.getLogger("mindscope.access")
REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def route_label(scope: Scope) -> str:
    """The route template a request went to; for one refused before routing (a 413 on its
    Content-Length), the route its path names; "unmatched" when no route takes its path."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path_format", route.path))  # /activations/{layer}, not {layer:path}
    app = scope.get("app")
    if app is None:
        return "unmatched"
    path = scope["path"]
    return next((template for template, regex in _path_templates(app) if regex.match(path)), "unmatched")


def _path_templates(app: Any) -> list[tuple[str, re.Pattern[str]]]:
    """The app's documented path templates with their regular expressions, computed once per app."""
    templates: list[tuple[str, re.Pattern[str]]] | None = getattr(app.state, "path_templates", None)
    if templates is None:
        paths = app.openapi().get("paths", {})
        templates = app.state.path_templates = [(template, compile_path(template)[0]) for template in paths]
    return templates


class RequestObserver:
    """Gives each request an id (X-Request-ID, kept when the client sent a sane one), logs it, counts it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = given if _VALID_ID.match(given) else os.urandom(16).hex()
        status = 500
        start = time.perf_counter()
        self.metrics.in_flight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            route = route_label(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    }
                )
            )


def trace_requests(app: Any, provider: Any) -> None:
    """A server span for every request, around every middleware, continuing the client's
    `traceparent`; URLs in `OTEL_PYTHON_FASTAPI_EXCLUDED_URLS` are left out."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=["receive", "send"])
