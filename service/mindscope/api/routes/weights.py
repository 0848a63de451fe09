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
from mindscope.dataplane.parameters import CommaSeparated
from mindscope.engine.weights import (
    Source,
    Stage,
    WeightSet,
    require_stages,
    resolve_stage,
    weight_histograms,
    weight_set,
    weight_tensors,
)
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
        list[str] | None,
        Query(max_length=32, description="names or indices, comma-separated or repeated"),
        CommaSeparated,
    ] = None,
    bins: Annotated[int, Query(ge=2, le=1000)] = 50,
    weights: Annotated[
        Source | None,
        Query(
            description="served: the weights the service runs; learned: as the optimizer trained them, for a "
            "model that folds BatchNorm into its served kernels (the default where the store keeps them)"
        ),
    ] = None,
    format: FormatQuery = None,
) -> WeightHistogramsResponse | Response:
    names = layers or None
    chosen_weights = weight_set(loaded, weights)
    chosen = resolve_stage(chosen_weights, stage)
    if wants_png(request, format):
        return picture_response(histogram_picture(chosen_weights, chosen, names, bins))
    histograms = weight_histograms(chosen_weights, chosen, names, bins)
    return WeightHistogramsResponse(
        stage=chosen,
        source=chosen_weights.source,
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
        weights=chosen_weights.note,
        model=model_ref(loaded),
    )


# A picture of more layers than this (a deep imported model) shows the first ones and says so.
PICTURE_MAX_LAYERS = 12

_PICTURES: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
_PICTURES_LOCK = threading.Lock()
_PICTURES_KEPT = 32


def histogram_picture(weights: WeightSet, stage: Stage, layers: list[str] | None, bins: int) -> bytes:
    """The PNG, drawn once per model version and parameters (a model's weights never change)."""
    key = (weights.label, weights.source, stage, tuple(layers or ()), bins)
    with _PICTURES_LOCK:
        if key in _PICTURES:
            _PICTURES.move_to_end(key)
            return _PICTURES[key]
    stages = require_stages(weights, stage)
    shown = layers or [info.name for info in weights.layers[:PICTURE_MAX_LAYERS]]
    panels = [
        WeightPanel(t.layer, t.parameter, tuple(t.trained.shape), {s: getattr(t, s) for s in stages})
        for t in weight_tensors(weights, shown)
    ]
    notes = [weights.note]
    if not layers and len(shown) < len(weights.layers):
        notes.append(f"the first {len(shown)} of {len(weights.layers)} layers with weights; name others with ?layers=")
    picture = histogram_figure(panels, bins, "; ".join(n for n in notes if n) or None)
    with _PICTURES_LOCK:
        _PICTURES[key] = picture
        while len(_PICTURES) > _PICTURES_KEPT:
            _PICTURES.popitem(last=False)
    return picture
