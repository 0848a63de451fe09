"""The service's Prometheus metrics, one registry for every front end: requests by route and status,
latency, requests in flight, client disconnects, and each loaded model's batchers."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mindscope.engine.registry import ModelRegistry


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
        self.registry.register(_ResidencyCollector(models))


class _ResidencyCollector(Collector):
    """Models in memory, their weights' bytes, and loads and unloads so far."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.models.stats
        yield GaugeMetricFamily("mindscope_models_resident", "models in memory", value=len(self.models.loaded()))
        yield GaugeMetricFamily(
            "mindscope_models_resident_bytes",
            "bytes of the weights of the models in memory",
            value=self.models.resident_bytes,
        )
        yield CounterMetricFamily("mindscope_model_loads", "models loaded and warmed up", value=stats.loads)
        yield CounterMetricFamily("mindscope_model_load_failures", "model loads that failed", value=stats.failed_loads)
        yield CounterMetricFamily(
            "mindscope_model_unloads", "models unloaded to stay within the resident limits", value=stats.unloads
        )
        yield CounterMetricFamily(
            "mindscope_model_load_seconds",
            "seconds spent loading and warming up models, summed",
            value=stats.load_seconds,
        )


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
