"""The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`), beside the REST API.

It runs in the service's own event loop (grpc.aio), started and stopped with the app
(`app.lifespan`), so it shares the registry, the batchers, the limits and the API key: send the
key as metadata (`authorization: Bearer KEY` or `x-api-key: KEY`). Each call's model work gets the
same deadline as a REST request (or the client's, when sooner) and is cancelled when the client
goes away. Calls are counted in the same metrics, with the route `grpc:<Method>`.

The message modules are generated from `open_inference.proto` beside this file (`make protos`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from starlette.datastructures import Headers

from mindscope import __version__
from mindscope.config import Settings
from mindscope.dataplane.access import check_api_key
from mindscope.dataplane.budget import DecodeBudget
from mindscope.dataplane.decoding import DecodeLimits
from mindscope.dataplane.metrics import Metrics
from mindscope.dataplane.models import serving_model
from mindscope.dataplane.tensors import (
    InputTensor,
    check_outputs,
    images_from,
    infer,
    model_inputs,
    model_outputs,
    numeric_array,
    split_bytes_elements,
)
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import parse_version
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import InvalidInput, MindscopeError, ModelIntegrityError, ModelNotFound, ModelNotReady
from mindscope.protocols import open_inference_pb2 as pb
from mindscope.protocols import open_inference_pb2_grpc as pb_grpc

logger = logging.getLogger("mindscope.grpc")
Reply = TypeVar("Reply")

# HTTP status of a domain error -> the gRPC status a client sees.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, registry: ModelRegistry, settings: Settings, budget: DecodeBudget, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.budget = budget
        self.metrics = metrics
        self._counters: dict[tuple[str, str], Any] = {}  # the metrics' children by (route, status)
        self._latencies: dict[str, Any] = {}

    async def _call(
        self, method: str, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[Reply]], secured: bool = True
    ) -> Reply:
        """Run one call: the API key, a deadline and cancellation for its model work, the error as a
        gRPC status, and the metrics."""
        route, started, status = f"grpc:{method}", time.perf_counter(), "OK"
        remaining = context.time_remaining()
        limit = self.settings.request_timeout_s
        timeout = limit if remaining is None else min(remaining, limit)
        request = RequestWork(timeout)
        context.add_done_callback(lambda _: request.cancel("the client went away") if context.cancelled() else None)
        self.metrics.in_flight.inc()
        try:
            if secured and self.settings.api_key is not None:
                metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
                check_api_key(Headers(headers=metadata), self.settings)  # gRPC metadata, as HTTP headers
            with request_work(request):
                return await work()
        except MindscopeError as exc:
            code = _CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)
            status = code.name
            await context.abort(code, exc.message)
        except Exception:
            logger.exception("gRPC %s failed", method)
            status = "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, "the server failed to answer this call; it has been logged")
        finally:
            self.metrics.in_flight.dec()
            counter = self._counters.get((route, status))
            if counter is None:
                counter = self._counters[route, status] = self.metrics.requests.labels("POST", route, status)
            counter.inc()
            latency = self._latencies.get(route)
            if latency is None:
                latency = self._latencies[route] = self.metrics.latency.labels(route)
            latency.observe(time.perf_counter() - started)
        raise AssertionError("unreachable: context.abort raises")

    async def _model(self, name: str, version: str) -> LoadedModel:
        return await serving_model(self.registry, name or None, parse_version(version))

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def live() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._call("ServerLive", context, live, secured=False)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def ready() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.registry.ready)

        return await self._call("ServerReady", context, ready, secured=False)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def ready() -> pb.ModelReadyResponse:
            try:
                await self._model(request.name, request.version)
            except (ModelNotFound, ModelIntegrityError, ModelNotReady):
                return pb.ModelReadyResponse(ready=False)  # as REST answers it: not ready, not an error
            return pb.ModelReadyResponse(ready=True)

        return await self._call("ModelReady", context, ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def metadata() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name="mindscope", version=__version__, extensions=[])

        return await self._call("ServerMetadata", context, metadata)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def metadata() -> pb.ModelMetadataResponse:
            loaded = await self._model(request.name, request.version)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=loaded.ref.name,
                versions=[str(v) for v in self.registry.store.versions(loaded.ref.name)],
                platform="keras",
                inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in model_inputs(loaded)],
                outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in model_outputs(loaded)],
            )

        return await self._call("ModelMetadata", context, metadata)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def run() -> pb.ModelInferResponse:
            loaded = await self._model(request.model_name, request.model_version)
            if len(request.inputs) != 1:
                raise InvalidInput(f"{loaded.ref.label} takes one input; got {len(request.inputs)}")
            if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
                raise InvalidInput("raw_input_contents must hold one entry per input")
            limits = DecodeLimits(
                loaded.input_shape, self.settings.max_image_pixels, self.settings.max_batch_instances, self.budget
            )
            images = await images_from(loaded, input_tensor(request, 0), limits)
            names = check_outputs(loaded, [output.name for output in request.outputs])
            results = await infer(loaded, images, names)
            response = pb.ModelInferResponse(
                model_name=loaded.ref.name, model_version=str(loaded.ref.version), id=request.id
            )
            for name, values in results.items():
                response.outputs.add(name=name, datatype="FP32", shape=list(values.shape))
                response.raw_output_contents.append(np.ascontiguousarray(values, "<f4").tobytes())
            return response

        return await self._call("ModelInfer", context, run)


def input_tensor(request: pb.ModelInferRequest, index: int) -> InputTensor:
    """Input `index` with its data, from raw_input_contents or from its typed contents."""
    item = request.inputs[index]
    shape, datatype = list(item.shape), item.datatype
    count = math.prod(shape)
    if request.raw_input_contents:
        raw = request.raw_input_contents[index]
        if datatype == "BYTES":
            return InputTensor(item.name, datatype, shape, split_bytes_elements(raw, count))
        return InputTensor(item.name, datatype, shape, numeric_array(datatype, shape, raw))
    contents = item.contents
    if datatype == "BYTES":
        return InputTensor(item.name, datatype, shape, list(contents.bytes_contents))
    typed = {"FP32": contents.fp32_contents, "FP64": contents.fp64_contents, "UINT8": contents.uint_contents}
    return InputTensor(item.name, datatype, shape, numeric_array(datatype, shape, list(typed.get(datatype, []))))


async def start_grpc_server(
    port: int, host: str, registry: ModelRegistry, settings: Settings, budget: DecodeBudget, metrics: Metrics
) -> grpc.aio.Server:
    """Listen on `host:port`; the server, started."""
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # gRPC sets SO_REUSEPORT by default: a second server on a taken port would then share
            # its calls with the first instead of failing.
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(registry, settings, budget, metrics), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"gRPC cannot listen on {host}:{port}; set --grpc-port to a free port, or 0 to turn it off")
    await server.start()
    logger.info("gRPC (Open Inference Protocol) listening on %s:%d", host, bound)
    return server
