"""Request ids, one JSON access-log line per request, and Prometheus metrics at /metrics."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mindscope.engine.registry import ModelRegistry

access_log = logging.getLogger("mindscope.access")
REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Metrics:
    def __init__(self, models: ModelRegistry) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mindscope_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mindscope_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.in_flight = Gauge("mindscope_requests_in_flight", "HTTP requests being served now", registry=self.registry)
        self.disconnects = Counter(
            "mindscope_client_disconnects",
            "requests whose client went away before the answer (their model work is cancelled)",
            registry=self.registry,
        )
        self.registry.register(_BatcherCollector(models))


class _BatcherCollector(Collector):
    """Queue depth, batch counts and sizes, and rejections of every loaded model's batchers."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["model", "kind"]
        depth = GaugeMetricFamily("mindscope_queue_depth", "calls waiting for a batch", labels=labels)
        batches = CounterMetricFamily("mindscope_batches", "compiled calls run", labels=labels)
        rows = CounterMetricFamily("mindscope_batch_rows", "rows run in all batches", labels=labels)
        largest = GaugeMetricFamily("mindscope_batch_largest_rows", "largest batch so far", labels=labels)
        rejected = CounterMetricFamily("mindscope_rejections", "calls refused: the queue was full", labels=labels)
        too_late = CounterMetricFamily(
            "mindscope_admission_refusals", "calls refused: they could not finish before their deadline", labels=labels
        )
        rate = GaugeMetricFamily(
            "mindscope_rows_per_second", "measured rows per second of the compiled call", labels=labels
        )
        queued = CounterMetricFamily("mindscope_queued_seconds", "seconds calls spent queued, summed", labels=labels)
        paused = CounterMetricFamily(
            "mindscope_paused_seconds", "seconds a lane paused to leave the cores to waiting predictions", labels=labels
        )
        for loaded in self.models.loaded_models():
            for kind, batcher in (("forward", loaded.forward_batcher), ("gradients", loaded.gradient_batcher)):
                key = [loaded.ref.label, kind]
                depth.add_metric(key, batcher.depth)
                batches.add_metric(key, batcher.stats.batches)
                rows.add_metric(key, batcher.stats.rows)
                largest.add_metric(key, batcher.stats.largest)
                rejected.add_metric(key, batcher.stats.rejected)
                too_late.add_metric(key, batcher.stats.refused_for_deadline)
                rate.add_metric(key, batcher.stats.rows_per_s or 0.0)
                queued.add_metric(key, batcher.stats.queued_s)
                paused.add_metric(key, batcher.stats.paused_s)
        yield from (depth, batches, rows, largest, rejected, too_late, rate, queued, paused)


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
