from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mindscope.api.deps import RegistryDep
from mindscope.api.schemas import HealthResponse, ModelRefOut

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=HealthResponse, summary="The process answers")
async def read_liveness() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/ready",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "loading, or the model failed to load"}},
    summary="200 once the default model is loaded and warmed up, else 503",
)
async def read_readiness(request: Request, registry: RegistryDep) -> HealthResponse | JSONResponse:
    state = request.app.state
    models = [ModelRefOut(name=ref.name, version=ref.version) for ref in registry.loaded()]
    if state.ready:
        return HealthResponse(status="ok", models=models)
    body = HealthResponse(status="failed" if state.load_error else "loading", detail=state.load_error)
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})


metrics_router = APIRouter(tags=["health"])


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    summary="Request counts and latencies per route, queue depth, batch sizes, rejections",
)
def read_metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
