from __future__ import annotations

from fastapi import APIRouter

from mindscope.api.deps import RegistryDep, SettingsDep
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.schemas import ModelRefOut, ReloadResponse
from mindscope.errors import AdminDisabled

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Load the store's newest default version beside the serving one and swap it in",
)
def reload_models(registry: RegistryDep, settings: SettingsDep) -> ReloadResponse:
    if settings.api_key is None:
        raise AdminDisabled("admin routes need MINDSCOPE_API_KEY to be set")
    ref, changed = registry.reload_default()  # a failing new version raises; the old one keeps serving
    return ReloadResponse(serving=ModelRefOut(name=ref.name, version=ref.version), changed=changed)
