from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from mindscope.api.codecs import wants_png
from mindscope.api.deps import FormatQuery, ModelDep
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, model_ref, picture_response
from mindscope.api.schemas import (
    ArrayPayload,
    ParameterHistogramOut,
    StageHistogramOut,
    WeightHistogramsResponse,
)
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.weights import Stage, require_stages, resolve_stage, weight_histograms, weight_tensors
from mindscope.render.charts import WeightPanel, histogram_figure

router = APIRouter(tags=["weights"])


@router.get(
    "/weights/histogram",
    response_model=WeightHistogramsResponse,
    responses={**ERROR_RESPONSES, 200: PNG_RESPONSE},
    summary="Histograms of each layer's weights, before and/or after training, on shared bin edges",
)
def read_weight_histograms(
    request: Request,
    loaded: ModelDep,
    stage: Annotated[
        Stage | None, Query(description="default: both, or trained for a model stored without initial weights")
    ] = None,
    layers: Annotated[
        list[str] | None, Query(max_length=32, description="names or indices, repeated or comma-separated")
    ] = None,
    bins: Annotated[int, Query(ge=2, le=1000)] = 50,
    format: FormatQuery = None,
) -> WeightHistogramsResponse | Response:
    names = [part for item in layers for part in item.split(",") if part] if layers else None
    chosen = resolve_stage(loaded, stage)
    if wants_png(request, format):
        return picture_response(histogram_picture(loaded, chosen, names, bins))
    histograms = weight_histograms(loaded, chosen, names, bins)
    return WeightHistogramsResponse(
        stage=chosen,
        bins=bins,
        histograms=[
            ParameterHistogramOut(
                layer=h.layer,
                parameter=h.parameter,
                shape=list(h.shape),
                edges=ArrayPayload.of(h.edges),
                stages={
                    name: StageHistogramOut(
                        counts=ArrayPayload.of(s.counts), mean=s.mean, std=s.std, min=s.min, max=s.max
                    )
                    for name, s in h.stages.items()
                },
                relative_change=h.relative_change,
            )
            for h in histograms
        ],
        weights=weights_note(loaded),
        model=model_ref(loaded),
    )


def weights_note(loaded: LoadedModel) -> str | None:
    """Which weights the histograms show, as the model's metadata says (e.g. BatchNorm folded in)."""
    note = loaded.metadata.get("architecture", {}).get("batch_norm")
    return None if note is None else f"BatchNorm: {note}"


# A picture of more layers than this (a deep imported model) shows the first ones and says so.
PICTURE_MAX_LAYERS = 12

_PICTURES: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
_PICTURES_LOCK = threading.Lock()
_PICTURES_KEPT = 32


def histogram_picture(loaded: LoadedModel, stage: Stage, layers: list[str] | None, bins: int) -> bytes:
    """The PNG, drawn once per model version and parameters (a model's weights never change)."""
    key = (loaded.ref, stage, tuple(layers or ()), bins)
    with _PICTURES_LOCK:
        if key in _PICTURES:
            _PICTURES.move_to_end(key)
            return _PICTURES[key]
    stages = require_stages(loaded, stage)
    shown = layers or [info.name for info in loaded.weight_layers[:PICTURE_MAX_LAYERS]]
    panels = [
        WeightPanel(t.layer, t.parameter, tuple(t.trained.shape), {s: getattr(t, s) for s in stages})
        for t in weight_tensors(loaded, shown)
    ]
    notes = [weights_note(loaded)]
    if len(shown) < len(loaded.weight_layers):
        notes.append(
            f"the first {len(shown)} of {len(loaded.weight_layers)} layers with weights; name others with ?layers="
        )
    picture = histogram_figure(panels, bins, "; ".join(n for n in notes if n) or None)
    with _PICTURES_LOCK:
        _PICTURES[key] = picture
        while len(_PICTURES) > _PICTURES_KEPT:
            _PICTURES.popitem(last=False)
    return picture
