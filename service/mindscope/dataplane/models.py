"""Which model serves a request: by name and version (one version parser for every protocol), the
serving default without a disk access, any other loaded on demand off the event loop, and 503 until
the registry is ready."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import parse_version
from mindscope.errors import ModelNotReady

__all__ = ["parse_version", "serving_model"]


async def serving_model(registry: ModelRegistry, name: str | None = None, version: int | None = None) -> LoadedModel:
    """The model a request asks for: the serving default without a disk access, any other loaded
    (or loaded now) off the event loop; 503 until the registry is ready."""
    if not registry.ready:
        raise ModelNotReady("the model is still loading; retry shortly", retry_after_s=1)
    serving = registry.serving_for(name, version)
    return serving if serving is not None else await run_in_threadpool(registry.get, name, version)
