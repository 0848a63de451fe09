"""OpenTelemetry traces, configured by the standard `OTEL_*` environment variables.

Tracing is on when `OTEL_TRACES_EXPORTER` names an exporter or an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and `OTEL_SDK_DISABLED` is
not `true`. Then every request gets a server span (FastAPI's instrumentation, installed by
`api.observability.trace_requests`: it continues a client's W3C `traceparent`), with child spans
for `decode`, `queue wait`, `model call` (the batch's rows and requests as attributes) and
`render`. The exporter (`otlp`, over `http/protobuf` or `grpc` by `OTEL_EXPORTER_OTLP_PROTOCOL`,
or `console`), the sampler (`OTEL_TRACES_SAMPLER`), the resource (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`) and the batch processor (`OTEL_BSP_*`) are the SDK's own readings of
those variables.

Off, nothing of the SDK is imported and each hook below is one test of a module global.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

logger = logging.getLogger("mindscope")

_tracer: Tracer | None = None  # None: tracing is off


def enabled() -> bool:
    return _tracer is not None


def configured(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the `OTEL_*` variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def start(service_name: str = "mindscope") -> TracerProvider | None:
    """The process's tracer provider from the environment, with its exporters; None when tracing
    is off. One per process: the engine's spans (the batchers' threads) use it."""
    global _tracer
    if not configured():
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    given = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(given))
    for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(","):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name.strip().lower())))
    _tracer = provider.get_tracer("mindscope")
    return provider


def stop(provider: TracerProvider | None) -> None:
    """Send what is buffered and stop the exporters."""
    global _tracer
    if provider is not None:
        provider.shutdown()
        _tracer = None


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not one mindscope knows: use otlp, console or none")
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf or grpc")


_OFF = contextlib.nullcontext()


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one while tracing is on (and a request's span is current);
    with tracing off, a shared do-nothing context."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(name, attributes=attributes)


def capture() -> tuple[Context, int] | None:
    """The current context and the time, for spans recorded later on another thread (a batcher's);
    None when tracing is off or no span is current (a job's work is not traced)."""
    if _tracer is None:
        return None
    from opentelemetry import context, trace

    if not trace.get_current_span().get_span_context().is_valid:
        return None
    return context.get_current(), time.time_ns()


def record(parent: tuple[Context, int], started_ns: int, ended_ns: int, **attributes: Any) -> None:
    """The `queue wait` (from `capture` to `started_ns`) and `model call` spans of one caller's rows."""
    tracer = _tracer
    if tracer is None:
        return
    context, queued_ns = parent
    if started_ns > queued_ns:
        tracer.start_span("queue wait", context=context, start_time=queued_ns).end(end_time=started_ns)
    tracer.start_span("model call", context=context, start_time=started_ns, attributes=attributes).end(
        end_time=ended_ns
    )
