"""create_app(settings): wiring only. The model loads in the background once the server is up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from mindscope import __version__, tracing
from mindscope.api.deps import reject_unknown_query, require_api_key
from mindscope.api.errors import install_error_handlers
from mindscope.api.limits import BodyLimits, RequestLifetime
from mindscope.api.observability import RequestObserver, trace_requests
from mindscope.api.openapi import install_openapi
from mindscope.api.payload_log import PayloadLogger, PayloadSink
from mindscope.api.predict_fast_path import PredictFastPath
from mindscope.api.routes import (
    activations,
    admin,
    concepts,
    examples,
    explain,
    explorer,
    health,
    jobs,
    metrics,
    models,
    predict,
    v1,
    v2,
    visualize,
    weights,
)
from mindscope.api.v2_fast_path import V2InferFastPath
from mindscope.config import Settings
from mindscope.dataplane.budget import DecodeBudget
from mindscope.dataplane.metrics import Metrics
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import ModelStore
from mindscope.errors import MindscopeError
from mindscope.jobs.metrics import JobsCollector
from mindscope.jobs.service import JobService

logger = logging.getLogger("mindscope")


def load_default_model(app: FastAPI) -> None:
    """Serve the store's default entry once it loads; keep the previous one when it does not."""
    registry: ModelRegistry = app.state.registry
    try:
        ref, changed = registry.reload_default()
    except MindscopeError:  # the registry logged why, and what keeps serving
        return
    if changed:
        logger.info("now serving %s (loaded and warmed up)", ref.label)


def load_models(app: FastAPI) -> None:
    """At start: the default, then the models MINDSCOPE_PRELOAD names."""
    load_default_model(app)
    app.state.registry.preload(app.state.settings.preload_names())


async def _watch_store(app: FastAPI, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(load_default_model, app)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    loading = asyncio.create_task(asyncio.to_thread(load_models, app))
    settings: Settings = app.state.settings
    interval = settings.reload_interval_s
    watching = asyncio.create_task(_watch_store(app, interval)) if interval > 0 else None
    grpc_server = None
    if settings.grpc_port:
        # Imported only here: its message classes take the `inference.*` names in protobuf's
        # default pool, which a process embedding the app may hold for a client of its own.
        from mindscope.protocols.grpc_service import start_grpc_server

        grpc_server = await start_grpc_server(
            settings.grpc_port,
            settings.grpc_host,
            app.state.registry,
            settings,
            app.state.decode_budget,
            app.state.metrics,
        )
    app.state.jobs.start()
    if app.state.payload_sink is not None:
        app.state.payload_sink.start()
    yield
    if app.state.payload_sink is not None:
        await asyncio.to_thread(app.state.payload_sink.stop)
    await asyncio.to_thread(app.state.jobs.stop)  # items in flight stay queued for the next start
    if grpc_server is not None:
        await grpc_server.stop(grace=5)
    app.state.registry.stop_serving()
    if watching is not None:
        watching.cancel()
    await loading
    app.state.registry.close()
    await asyncio.to_thread(tracing.stop, app.state.tracer_provider)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Swagger UI and ReDoc from the installed package, not a CDN: /docs works without internet.
    app = FastAPIOffline(
        title="mindscope",
        version=__version__,
        description="A trained CIFAR-10 All-Convolutional Network and what happens inside it.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.settings = settings
    app.state.registry = ModelRegistry(
        ModelStore(settings.model_store_dir, settings.default_model),
        settings.forward_batching(),
        settings.gradient_batching(),
        settings.residency(),
    )
    app.state.decode_budget = DecodeBudget(settings.decode_budget_bytes, settings.decode_wait_s)
    install_error_handlers(app)
    install_openapi(app, settings)
    app.state.metrics = Metrics(app.state.registry)
    app.state.jobs = JobService(settings.job_settings(), app.state.registry)
    app.state.metrics.registry.register(JobsCollector(app.state.jobs))
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(explorer.router)
    secured = [Depends(require_api_key)]
    for module in (models, predict, activations, weights, examples, explain, visualize, jobs, concepts, admin):
        app.include_router(module.router, dependencies=secured)
    # The standard protocols check the key route by route: their health routes stay open.
    app.include_router(v1.router)
    app.include_router(v2.router)
    # The last added runs first: request id and log, body-size cap, lifetime, then the fast paths.
    app.add_middleware(V2InferFastPath, state=app.state)
    app.add_middleware(PredictFastPath, state=app.state)
    app.add_middleware(
        RequestLifetime, timeout_s=settings.request_timeout_s, on_disconnect=app.state.metrics.disconnects.inc
    )
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
        min_rate=settings.body_min_rate,
        uploads={"/jobs": settings.jobs_max_upload_bytes, "/concepts": settings.jobs_max_upload_bytes},
    )
    payload_log = settings.payload_log_settings()
    app.state.payload_sink = None
    if payload_log is not None:  # inside the request id, outside the fast paths: it sees every inference
        app.state.payload_sink = PayloadSink(payload_log, app.state.metrics.registry)
        app.add_middleware(PayloadLogger, sink=app.state.payload_sink)
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    # OTEL_* variables: a span per request around all of the above, continuing the client's traceparent.
    app.state.tracer_provider = tracing.start()
    if app.state.tracer_provider is not None:
        trace_requests(app, app.state.tracer_provider)
    return app
