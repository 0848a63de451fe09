"""Small mappings shared by routes: PNG responses and engine objects -> schemas."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel

from mindscope import tracing
from mindscope.api.schemas import LayerOut, ModelRefOut
from mindscope.engine.loaded_model import LayerInfo, LoadedModel

PNG_RESPONSE = {
    "content": {"image/png": {}},
    "description": "JSON by default; a PNG with Accept: image/png or ?format=png",
}


def json_response(body: BaseModel) -> Response:
    """A response model already built and valid: serialized once, not validated again by FastAPI."""
    with tracing.span("render", format="json"):
        return Response(content=body.model_dump_json(), media_type="application/json")


def picture_response(data: bytes, media_type: str = "image/png") -> Response:
    """A drawn picture: a PNG, or a GIF for the animation."""
    return Response(content=data, media_type=media_type)


def model_ref(loaded: LoadedModel) -> ModelRefOut:
    return ModelRefOut(name=loaded.ref.name, version=loaded.ref.version)


def layer_out(info: LayerInfo) -> LayerOut:
    return LayerOut(index=info.index, name=info.name, output_shape=list(info.output_shape))
