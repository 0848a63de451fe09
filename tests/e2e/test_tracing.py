"""OpenTelemetry traces from a `mindscope serve` configured only by `OTEL_*` variables, sent to a
real OTLP receiver on loopback that the test starts (OTLP/HTTP with protobuf bodies, and OTLP/gRPC
on the collector's own service definition), and read back: one server span per request, its
children (decode, queue wait, model call with the batch's size, render) under it, and the trace
the client's `traceparent` began, from curl-like headers and from the SDK inside an application
span."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import pytest
from mindscope_client import AsyncClient, Client
from mindscope_client._tracing import inject_trace_context
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from tests.conftest import COMMITTED_STORE
from tests.servers import LoopbackHTTP, QuietHandler, start_server

JPEG = {"Content-Type": "image/jpeg"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Spans:
    """Spans received, by hex ids: {span_id: span}; thread-safe."""

    def __init__(self) -> None:
        self._spans: dict[str, object] = {}
        self._lock = threading.Lock()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        span.attributes.add(key="test.service").value.string_value = service
                        self._spans[span.span_id.hex()] = span

    def of_trace(self, trace_id: str) -> list:
        with self._lock:
            return [s for s in self._spans.values() if s.trace_id.hex() == trace_id]

    def wait_for(self, trace_id: str, names: set[str], timeout: float = 60.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            found = self.of_trace(trace_id)
            if names <= {s.name for s in found}:
                return found
            assert time.monotonic() < deadline, (names, sorted(s.name for s in found))
            time.sleep(0.05)


class HttpReceiver:
    """OTLP/HTTP: POST /v1/traces with an ExportTraceServiceRequest in protobuf."""

    def __init__(self, spans: Spans) -> None:
        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                spans.add(request)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.http = LoopbackHTTP(Handler)
        self.endpoint = self.http.url

    def close(self) -> None:
        self.http.close()


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, spans: Spans) -> None:
        self.spans = spans
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"
        self.server.start()

    def Export(self, request, context):  # noqa: N802 (the service's method name)
        self.spans.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def otel_env(endpoint: str, protocol: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": f"mindscope-{protocol.replace('/', '-')}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "health,metrics",
    }


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Iterator[tuple[str, Spans]]:
    spans = Spans()
    receiver = HttpReceiver(spans)
    server = start_server(
        tmp_path_factory.mktemp("traced"),
        COMMITTED_STORE,
        MINDSCOPE_JOBS_DIR=str(tmp_path_factory.mktemp("jobs")),
        **otel_env(receiver.endpoint, "http/protobuf"),
    )
    try:
        server.wait_ready()
        yield server.base_url, spans
    finally:
        server.stop()
        receiver.close()


def by_name(spans: list) -> dict[str, list]:
    named: dict[str, list] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def under(span, ancestor, spans: list) -> bool:
    """Whether `span` descends from `ancestor` through spans of the trace."""
    ids = {s.span_id: s for s in spans}
    parent = span.parent_span_id
    while parent:
        if parent == ancestor.span_id:
            return True
        parent = ids[parent].parent_span_id if parent in ids else b""
    return False


def test_a_request_continues_the_callers_trace_with_its_stages_as_children(traced, sample_jpeg):
    base_url, spans = traced
    parent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    answer = httpx.post(f"{base_url}/predict", content=sample_jpeg, headers={**JPEG, "traceparent": parent})
    assert answer.status_code == 200
    found = by_name(spans.wait_for(TRACE_ID, {"POST /predict", "decode", "queue wait", "model call", "render"}))
    (server,) = found["POST /predict"]
    assert server.parent_span_id.hex() == CLIENT_SPAN  # the caller's span is the server span's parent
    assert server.kind == server.SPAN_KIND_SERVER
    stages = [found[name][0] for name in ("decode", "queue wait", "model call", "render")]
    for stage in stages:
        assert under(stage, server, spans.of_trace(TRACE_ID)), stage.name
        assert server.start_time_unix_nano <= stage.start_time_unix_nano <= stage.end_time_unix_nano
        assert stage.end_time_unix_nano <= server.end_time_unix_nano
    call = {a.key: a.value.int_value for a in found["model call"][0].attributes}
    assert call["mindscope.batch.rows"] >= call["mindscope.rows"] == 1
    assert call["mindscope.batch.callers"] >= 1
    # The service's name and the exporter came from the environment alone.
    service = {a.key: a.value.string_value for a in server.attributes}["test.service"]
    assert service == "mindscope-http-protobuf"


def test_an_explanation_as_png_has_its_gradient_calls_and_render_under_its_span(traced, sample_jpeg):
    base_url, spans = traced
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {**JPEG, "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    url = f"{base_url}/explain/integrated-gradients?steps=16&format=png"
    assert httpx.post(url, content=sample_jpeg, headers=headers, timeout=120).status_code == 200
    found = spans.wait_for(trace_id, {"decode", "model call", "render"})
    (server,) = [s for s in found if s.kind == s.SPAN_KIND_SERVER]
    assert server.name.startswith("POST /explain")
    renders = by_name(found)["render"]
    assert any({a.key: a.value.string_value for a in r.attributes}.get("format") == "png" for r in renders)
    assert all(under(s, server, found) for s in found if s is not server)


def test_the_sdk_sends_the_applications_trace_context(traced, sample_jpeg):
    base_url, spans = traced
    provider = TracerProvider()  # the application's own tracer, not the global one
    with provider.get_tracer("app").start_as_current_span("classify upload") as app_span:
        context = app_span.get_span_context()
        with Client(base_url) as client:
            client.predict(sample_jpeg)
    trace_id = format(context.trace_id, "032x")
    (server,) = by_name(spans.wait_for(trace_id, {"POST /predict"}))["POST /predict"]
    assert server.parent_span_id.hex() == format(context.span_id, "016x")

    async def from_a_coroutine() -> object:
        with provider.get_tracer("app").start_as_current_span("classify in a coroutine") as span:
            async with AsyncClient(base_url) as client:
                await client.predict(sample_jpeg)
            return span.get_span_context()

    context = asyncio.run(from_a_coroutine())
    trace_id = format(context.trace_id, "032x")
    (server,) = by_name(spans.wait_for(trace_id, {"POST /predict"}))["POST /predict"]
    assert server.parent_span_id.hex() == format(context.span_id, "016x")
    # Without a span being recorded, no trace context is sent: the server's trace is its own.
    assert not trace.get_current_span().get_span_context().is_valid
    request = httpx.Request("POST", f"{base_url}/predict")
    inject_trace_context(request)
    assert "traceparent" not in request.headers


def test_health_and_metrics_are_left_out_and_grpc_export_works(traced, sample_jpeg, tmp_path):
    base_url, spans = traced
    assert httpx.get(f"{base_url}/health/ready").status_code == 200
    # OTLP over gRPC, to the collector's own service on loopback, from a second server.
    grpc_spans = Spans()
    receiver = GrpcReceiver(grpc_spans)
    server = start_server(
        tmp_path, COMMITTED_STORE, MINDSCOPE_JOBS_DIR=str(tmp_path / "jobs"), **otel_env(receiver.endpoint, "grpc")
    )
    try:
        server.wait_ready()
        trace_id = "11112222333344445555666677778888"
        headers = {**JPEG, "traceparent": f"00-{trace_id}-1111222233334444-01"}
        assert httpx.post(f"{server.base_url}/predict", content=sample_jpeg, headers=headers).status_code == 200
        found = by_name(grpc_spans.wait_for(trace_id, {"POST /predict", "model call"}))
        assert found["POST /predict"][0].parent_span_id.hex() == "1111222233334444"
    finally:
        server.stop()
        receiver.server.stop(grace=1)
    with spans._lock:
        assert not any(
            s.name.startswith("GET /health") or s.name.startswith("GET /metrics") for s in spans._spans.values()
        )
