from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from mindscope.api.codecs import IMAGE_REQUEST_BODY, wants_png
from mindscope.api.deps import DecodedDep, FormatQuery, ModelDep
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, layer_out, model_ref, picture_response
from mindscope.api.schemas import ActivationsResponse, ArrayPayload, ChannelStatistics
from mindscope.dataplane.parameters import CommaSeparated
from mindscope.engine.activations import (
    LayerActivations,
    animation_frames,
    channel_labels,
    is_class_layer,
    layer_activations,
)
from mindscope.engine.loaded_model import LoadedModel
from mindscope.render.grids import ChannelGrid, activation_animation, activation_grid

router = APIRouter(tags=["activations"])


@router.post(
    "/activations/animation",
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={**ERROR_RESPONSES, 200: {"content": {"image/gif": {}}, "description": "animated GIF"}},
    response_class=Response,
    summary="GIF from the input through the activations of the model's animation layers (conv3, 6 and 9)",
)
def animate_activations(loaded: ModelDep, decoded: DecodedDep) -> Response:
    image = decoded.single()
    frames = animation_frames(loaded, image.pixels, loaded.animation_layers)
    return picture_response(activation_animation(image.pixels, [channel_grid(loaded, f) for f in frames]), "image/gif")


@router.post(
    "/activations/{layer:path}",
    response_model=ActivationsResponse,
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={**ERROR_RESPONSES, 200: PNG_RESPONSE},
    summary="One layer's output for an image (layer by name, conv3, or 1-based index, 3; "
    "inside a nested model by path, backbone/block_1)",
)
def read_activations(
    request: Request,
    layer: str,
    loaded: ModelDep,
    decoded: DecodedDep,
    channels: Annotated[
        list[int] | None,
        Query(max_length=512, description="channel indices, comma-separated or repeated; default: the first 27"),
        CommaSeparated,
    ] = None,
    format: FormatQuery = None,
) -> ActivationsResponse | Response:
    image = decoded.single()
    result = layer_activations(loaded, image.pixels, layer, channels)
    if wants_png(request, format):
        return picture_response(activation_grid(image.pixels, channel_grid(loaded, result)))
    return ActivationsResponse(
        layer=layer_out(result.layer),
        channels=result.channels.tolist(),
        activations=ArrayPayload.of(result.values),
        statistics=ChannelStatistics(
            mean=ArrayPayload.of(result.mean),
            max=ArrayPayload.of(result.max),
            fraction_positive=ArrayPayload.of(result.fraction_positive),
        ),
        input=image.info,
        model=model_ref(loaded),
    )


def channel_grid(loaded: LoadedModel, result: LayerActivations) -> ChannelGrid:
    layer, channels = result.layer, result.channels
    height, width, total = layer.output_shape
    contiguous = len(channels) > 1 and list(channels) == list(range(channels[0], channels[-1] + 1))
    if contiguous:
        shown = f"channels {channels[0]}-{channels[-1]}"
    else:
        listed = ", ".join(map(str, channels)) if len(channels) <= 8 else f"{len(channels)} chosen"
        shown = f"channel{'s' if len(channels) > 1 else ''} {listed}"
    title = f"{layer.name} (layer {layer.index}): {shown} of {total}, each {height}x{width}"
    return ChannelGrid(title, result.values, channel_labels(loaded, result), is_class_layer(loaded, layer))
