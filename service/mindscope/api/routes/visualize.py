"""What a channel looks for: GET /visualize/{layer}/{channel} and a grid for a layer's first channels."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from PIL import Image

from mindscope.api.codecs import wants_png
from mindscope.api.deps import FormatQuery, ModelDep, SettingsDep, settings_cap
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, json_response, layer_out, model_ref, picture_response
from mindscope.api.schemas import ArrayPayload, DatasetExamplesOut, FeatureOut, FeaturesResponse
from mindscope.engine.activations import is_class_layer
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.visualize import noise_image, visualizer_for
from mindscope.errors import DatasetExamplesMissing, InvalidInput
from mindscope.jobs.service import JobService
from mindscope.render.examples import examples_grid
from mindscope.render.features import feature_grid

router = APIRouter(prefix="/visualize", tags=["visualize"])
StepsQuery = Annotated[int, Query(ge=8, description="gradient-ascent steps, up to the cap (MINDSCOPE_MAX_STEPS)")]
SeedQuery = Annotated[int, Query(ge=0, le=2**32 - 1, description="the start's seed (same seed, same picture)")]
ROUTE: dict[str, Any] = {"response_model": FeaturesResponse, "responses": {**ERROR_RESPONSES, 200: PNG_RESPONSE}}


def features(
    request: Request,
    loaded: LoadedModel,
    layer_key: str,
    channels: list[int],
    steps: int,
    seed: int,
    format: str | None,
    settings: SettingsDep,
) -> FeaturesResponse | Response:
    settings_cap("steps", steps, 8, settings.max_steps, "MINDSCOPE_MAX_STEPS")
    layer = loaded.layer(layer_key)
    available = layer.output_shape[-1]
    bad = [c for c in channels if not 0 <= c < available]
    if bad:
        raise InvalidInput(f"{layer.name} has channels 0-{available - 1}; got {bad}", layer=layer.name)
    visualizer = visualizer_for(loaded)
    found = visualizer.visualize_many(layer.name, channels, steps, seed)
    noise = noise_image(loaded.input_shape, seed)
    on_noise = [float(visualizer.activation(layer.name, c, noise)[0]) for c in channels]
    if wants_png(request, format):
        images = [f.image for f in found]
        named = is_class_layer(loaded, layer)
        labels = [f"channel {c} ({loaded.class_names[c]})" if named else f"channel {c}" for c in channels]
        activations = [f.activation for f in found]
        picture = feature_grid(layer.name, channels, images, activations, on_noise, steps, seed, labels)
        return picture_response(picture)
    return FeaturesResponse(
        layer=layer_out(layer),
        steps=steps,
        seed=seed,
        features=[
            FeatureOut(channel=f.channel, image=ArrayPayload.of(f.image), activation=f.activation, on_noise=n)
            for f, n in zip(found, on_noise, strict=True)
        ],
        model=model_ref(loaded),
    )


@router.get(
    "/{layer:path}/{channel:int}",
    **ROUTE,
    summary="The image that most activates one channel of a layer (gradient ascent, seeded, cached)",
)
def visualize_channel(
    request: Request,
    loaded: ModelDep,
    settings: SettingsDep,
    layer: str,
    channel: int,
    steps: StepsQuery = 256,
    seed: SeedQuery = 0,
    format: FormatQuery = None,
    source: Annotated[
        Literal["ascent", "dataset"],
        Query(
            description="ascent: the picture gradient ascent draws; dataset: the dataset images that activate "
            "the channel most, with their receptive-field patches (an audit job computes them)"
        ),
    ] = "ascent",
) -> FeaturesResponse | Response:
    if source == "dataset":
        return dataset_examples(request, loaded, layer, channel, format)
    return features(request, loaded, layer, [channel], steps, seed, format, settings)


def dataset_examples(request: Request, loaded: LoadedModel, key: str, channel: int, format: str | None) -> Response:
    """The channel's dataset examples from the model version's latest audit job that looked at the layer."""
    layer = loaded.layer(key)
    jobs: JobService = request.app.state.jobs
    path = jobs.dataset_examples_path(loaded.ref.name, loaded.ref.version, layer.name)
    if not path.exists():
        raise DatasetExamplesMissing(
            f"no audit job has computed dataset examples of {layer.name} for {loaded.ref.label}; run one: POST /jobs "
            f'{{"kind": "audit", "folder": ..., "parameters": {{"layers": ["{layer.name}"]}}}}',
            layer=layer.name,
        )
    stored = json.loads(path.read_bytes())
    found = [c for c in stored["channels"] if c["channel"] == channel]
    if not found:
        shown = [c["channel"] for c in stored["channels"]]
        raise InvalidInput(
            f"the audit {stored['job']} computed channels {shown} of {layer.name}; ask one of them, or run an audit "
            "with more (parameters.channels)",
            channels=shown,
        )
    (entry,) = found
    if wants_png(request, format):
        title = (
            f"{loaded.ref.label} {layer.name} channel {channel}: the dataset images that activate it most "
            f"(audit {stored['job'][:8]})\nfirst: its feature visualization; each: source, peak activation"
        )
        thumbnails = [_picture(example["image"]) for example in entry["examples"]]
        captions = [f"{Path(e['source']).name}\n{e['activation']:.2f}" for e in entry["examples"]]
        feature = _picture(entry["feature"]).astype(np.float32) / 255
        return picture_response(examples_grid(feature, thumbnails, captions, title, first_label="visualization"))
    return json_response(DatasetExamplesOut.model_validate({"model": model_ref(loaded), "layer": layer.name} | entry))


def _picture(url: str) -> np.ndarray:
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@router.get(
    "/{layer:path}",
    **ROUTE,
    summary="The images that most activate a layer's first channels, as a grid",
)
def visualize_layer(
    request: Request,
    loaded: ModelDep,
    settings: SettingsDep,
    layer: str,
    count: Annotated[
        int | None,
        Query(
            ge=1, le=32, description="how many channels, from channel 0; default 8, or every class on the class layer"
        ),
    ] = None,
    steps: StepsQuery = 256,
    seed: SeedQuery = 0,
    format: FormatQuery = None,
) -> FeaturesResponse | Response:
    info = loaded.layer(layer)
    available = info.output_shape[-1]
    if count is None:
        count = available if is_class_layer(loaded, info) else 8
    channels = list(range(min(count, available)))
    return features(request, loaded, layer, channels, steps, seed, format, settings)
