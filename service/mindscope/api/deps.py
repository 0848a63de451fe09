"""Dependencies as Annotated aliases: settings, the registry, the selected model, the decoded body.

They are coroutines: FastAPI runs a plain-function dependency in the thread pool, a hop that costs
more than any of these does; what may block (loading a model, decoding a large image) is sent to
the thread pool explicitly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from mindscope.api.codecs import DecodedRequest, DecodeLimits, read_images
from mindscope.config import Settings
from mindscope.dataplane.access import check_api_key
from mindscope.dataplane.models import serving_model
from mindscope.engine.explain.method import within
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.registry import ModelRegistry
from mindscope.errors import InvalidInput


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    check_api_key(request.headers, settings)


async def get_model(
    registry: RegistryDep,
    model: Annotated[str | None, Query(max_length=64, description="model name; default: the store's")] = None,
    version: Annotated[int | None, Query(ge=1, description="model version; default: the highest")] = None,
) -> LoadedModel:
    return await serving_model(registry, model, version)


ModelDep = Annotated[LoadedModel, Depends(get_model)]


async def get_decoded(request: Request, settings: SettingsDep, loaded: ModelDep) -> DecodedRequest:
    """The body's images at the input shape of the model the request names (chosen first)."""
    return await read_images(request, decode_limits(request, settings, loaded))


def decode_limits(request: Request, settings: Settings, loaded: LoadedModel) -> DecodeLimits:
    """This server's decoding limits for a request to `loaded`."""
    return DecodeLimits(
        loaded.input_shape, settings.max_image_pixels, settings.max_batch_instances, request.app.state.decode_budget
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
