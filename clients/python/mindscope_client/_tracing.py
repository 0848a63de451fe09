"""W3C trace context on every request, when the application traces with OpenTelemetry.

The hooks write the current span's `traceparent` (and `tracestate`, baggage) into each request's
headers through OpenTelemetry's global propagator, so the server's spans join the application's
trace. Nothing is sent when OpenTelemetry is not installed or no span is being recorded; the SDK
does not depend on it.
"""

from __future__ import annotations

from typing import Any

import httpx

_inject: Any = None  # opentelemetry.propagate.inject once looked up; False when not installed


def _injector() -> Any:
    global _inject
    if _inject is None:
        try:
            from opentelemetry.propagate import inject
        except ImportError:
            _inject = False
        else:
            _inject = inject
    return _inject


def inject_trace_context(request: httpx.Request) -> None:
    """An httpx request hook: the current span's trace context into the request's headers."""
    inject = _injector()
    if inject:
        inject(request.headers)


async def inject_trace_context_async(request: httpx.Request) -> None:
    inject_trace_context(request)


def traced(http: httpx.Client) -> httpx.Client:
    """`http`, sending the application's trace context with each request."""
    if inject_trace_context not in http.event_hooks["request"]:
        http.event_hooks["request"].append(inject_trace_context)
    return http


def traced_async(http: httpx.AsyncClient) -> httpx.AsyncClient:
    if inject_trace_context_async not in http.event_hooks["request"]:
        http.event_hooks["request"].append(inject_trace_context_async)
    return http
