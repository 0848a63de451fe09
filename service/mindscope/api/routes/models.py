from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from mindscope.api.deps import RegistryDep
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import layer_out
from mindscope.api.schemas import ModelDetailResponse, ModelListResponse, ModelRefOut, ModelSummary
from mindscope.engine.weights import weight_sources

router = APIRouter(prefix="/models", tags=["models"], responses=ERROR_RESPONSES)


@router.get("", response_model=ModelListResponse, summary="Stored models and their versions")
def list_models(registry: RegistryDep) -> ModelListResponse:
    store = registry.store
    resident = registry.loaded()
    models = [
        ModelSummary(
            name=name,
            versions=store.versions(name),
            default_version=store.versions(name)[-1],
            loaded_versions=sorted(ref.version for ref in resident if ref.name == name),
        )
        for name in store.names()
    ]
    ref = registry.serving
    default = None if ref is None else ModelRefOut(name=ref.name, version=ref.version)
    return ModelListResponse(models=models, default=default)


@router.get("/{name}", response_model=ModelDetailResponse, summary="One model's metadata and layers")
def read_model(
    registry: RegistryDep,
    name: Annotated[str, Path(max_length=64)],
    version: Annotated[int | None, Query(ge=1)] = None,
) -> ModelDetailResponse:
    loaded = registry.get(name, version)
    return ModelDetailResponse(
        name=loaded.ref.name,
        version=loaded.ref.version,
        versions=registry.store.versions(loaded.ref.name),
        class_names=list(loaded.class_names),
        input_shape=list(loaded.input_shape),
        validation_accuracy=loaded.metadata.get("validation_accuracy"),
        layers=[layer_out(info) for info in loaded.layers],
        weight_layers=[layer_out(info) for info in loaded.weight_layers],
        weight_sources=list(weight_sources(loaded)),
        scores=list(loaded.scores),
        metadata=loaded.metadata,
    )
