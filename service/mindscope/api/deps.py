"""Dependencies as Annotated aliases: settings, the registry, the selected model, the decoded body.

They are coroutines: FastAPI runs a plain-function dependency in the thread pool, a hop that costs
more than any of these does; what may block (loading a model, decoding a large image) is sent to
the thread pool explicitly.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from mindscope.api.codecs import DecodedRequest, read_images
from mindscope.config import Settings
from mindscope.engine.explain.method import within
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.registry import ModelRegistry
from mindscope.errors import InvalidInput, ModelNotReady, Unauthorized


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def split_commas(values: object) -> object:
    """`?channels=0,1,2`, `?channels=0&channels=1&channels=2` and any mix of the two are one list."""
    if not isinstance(values, list):
        return values
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


# Every list-valued query parameter takes this beside its Query(...): both forms, everywhere
# (tests/api/test_query_lists.py checks each array parameter of the OpenAPI schema).
CommaSeparated = BeforeValidator(split_commas)

SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def check_api_key(headers: Headers, settings: Settings) -> None:
    """With MINDSCOPE_API_KEY set: `Authorization: Bearer KEY` or `X-API-Key: KEY` on every call."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    header = headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), expected):
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    check_api_key(request.headers, settings)


async def serving_model(registry: ModelRegistry, name: str | None = None, version: int | None = None) -> LoadedModel:
    """The model a request asks for: the serving default without a disk access, any other loaded
    (or loaded now) off the event loop; 503 until the registry is ready."""
    if not registry.ready:
        raise ModelNotReady("the model is still loading; retry shortly", retry_after_s=1)
    serving = registry.serving_for(name, version)
    return serving if serving is not None else await run_in_threadpool(registry.get, name, version)


async def get_model(
    registry: RegistryDep,
    model: Annotated[str | None, Query(max_length=64, description="model name; default: the store's")] = None,
    version: Annotated[int | None, Query(ge=1, description="model version; default: the highest")] = None,
) -> LoadedModel:
    return await serving_model(registry, model, version)


ModelDep = Annotated[LoadedModel, Depends(get_model)]


async def get_decoded(request: Request, settings: SettingsDep, loaded: ModelDep) -> DecodedRequest:
    """The body's images at the input shape of the model the request names (chosen first)."""
    budget = request.app.state.decode_budget
    return await read_images(
        request, settings.max_image_pixels, settings.max_batch_instances, budget, loaded.input_shape
    )


DecodedDep = Annotated[DecodedRequest, Depends(get_decoded)]
FormatQuery = Annotated[
    str | None, Query(pattern="^(json|png)$", description="png or json; overrides the Accept header")
]


# A value within [minimum, maximum], the cap being a Setting; else 422 saying both (the engine's rule).
settings_cap = within


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def query_names(route: APIRoute) -> frozenset[str]:
    """Every query parameter the route or its dependencies declare."""
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        names = _QUERY_NAMES[id(route)] = frozenset(_declared_queries(route.dependant))
    return names


def _declared_queries(dependant: Dependant) -> set[str]:
    names = set()
    for field in dependant.query_params:
        annotation = field.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # a query parameter model
            names |= {f.alias or name for name, f in annotation.model_fields.items()}
        else:
            names.add(field.alias)
    for sub in dependant.dependencies:
        names |= _declared_queries(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take (`?step=10` would otherwise be ignored)."""
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    valid = query_names(route)
    unknown = sorted(set(request.query_params) - valid)
    if unknown:
        raise InvalidInput(
            f"unknown query parameter {', '.join(unknown)}; {route.path} takes: {', '.join(sorted(valid)) or 'none'}",
            unknown=unknown,
            valid=sorted(valid),
        )
