"""create_app(settings): wiring only. The model loads in the background once the server is up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from mindscope import __version__
from mindscope.api.deps import require_api_key
from mindscope.api.errors import install_error_handlers
from mindscope.api.limits import BodySizeLimit
from mindscope.api.observability import Metrics, RequestObserver
from mindscope.api.routes import activations, explain, explorer, health, models, predict, weights
from mindscope.config import Settings
from mindscope.engine.runtime import ModelRegistry
from mindscope.engine.store import ModelStore
from mindscope.errors import MindscopeError

logger = logging.getLogger("mindscope")


def _load_default(app: FastAPI) -> None:
    registry: ModelRegistry = app.state.registry
    try:
        loaded = registry.get()
    except MindscopeError as exc:
        app.state.load_error = exc.message
        logger.error("the default model could not be loaded: %s", exc.message)
        return
    app.state.ready = True
    logger.info("model %s loaded and warmed up", loaded.ref.label)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    loading = asyncio.create_task(asyncio.to_thread(_load_default, app))
    yield
    app.state.ready = False
    await loading
    app.state.registry.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="mindscope",
        version=__version__,
        description="A trained CIFAR-10 All-Convolutional Network and what happens inside it.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = ModelRegistry(
        ModelStore(settings.model_store_dir, settings.default_model),
        settings.forward_batching(),
        settings.gradient_batching(),
    )
    app.state.ready = False
    app.state.load_error = None
    install_error_handlers(app)
    app.state.metrics = Metrics(app.state.registry)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    app.include_router(health.router)
    app.include_router(health.metrics_router)
    app.include_router(explorer.router)
    secured = [Depends(require_api_key)]
    for module in (models, predict, activations, weights, explain):
        app.include_router(module.router, dependencies=secured)
    return app
