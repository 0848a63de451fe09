from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mindscope.api.deps import RegistryDep
from mindscope.api.schemas import HealthResponse, ModelRefOut
from mindscope.engine.registry import ModelRegistry

router = APIRouter(prefix="/health", tags=["health"])


def _loaded(registry: ModelRegistry) -> list[ModelRefOut]:
    return [ModelRefOut(name=ref.name, version=ref.version) for ref in registry.loaded()]


@router.get("/live", response_model=HealthResponse, summary="The process answers (and which models it holds)")
async def read_liveness(registry: RegistryDep) -> HealthResponse:
    return HealthResponse(status="ok", models=_loaded(registry))


@router.get(
    "/ready",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "loading, or the model failed to load"}},
    summary="200 once the default model is loaded and warmed up, else 503",
)
async def read_readiness(registry: RegistryDep) -> HealthResponse | JSONResponse:
    if registry.ready:
        return HealthResponse(status="ok", models=_loaded(registry))
    error = registry.load_error
    body = HealthResponse(status="failed" if error else "loading", detail=error, models=_loaded(registry))
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})
