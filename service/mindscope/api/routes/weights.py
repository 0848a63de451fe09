from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from mindscope.api.codecs import wants_png
from mindscope.api.deps import FormatQuery, ModelDep
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, model_ref, png
from mindscope.api.schemas import (
    ArrayPayload,
    ParameterHistogramOut,
    StageHistogramOut,
    WeightHistogramsResponse,
)
from mindscope.engine.weights import Stage, weight_histograms
from mindscope.render.charts import histogram_figure

router = APIRouter(tags=["weights"])


@router.get(
    "/weights/histogram",
    response_model=WeightHistogramsResponse,
    responses={**ERROR_RESPONSES, 200: PNG_RESPONSE},
    summary="Kernel and bias histograms per layer, before and/or after training, on shared bin edges",
)
def read_weight_histograms(
    request: Request,
    loaded: ModelDep,
    stage: Stage = "both",
    layers: Annotated[
        list[str] | None, Query(max_length=32, description="names or indices, repeated or comma-separated")
    ] = None,
    bins: Annotated[int, Query(ge=2, le=1000)] = 50,
    format: FormatQuery = None,
) -> WeightHistogramsResponse | Response:
    names = [part for item in layers for part in item.split(",") if part] if layers else None
    histograms = weight_histograms(loaded, stage, names, bins)
    if wants_png(request, format):
        kernels: list[tuple[str, np.ndarray, Mapping[str, np.ndarray]]] = [
            (h.layer, h.edges, {s: v.counts for s, v in h.stages.items()})
            for h in histograms
            if h.parameter == "kernel"
        ]
        return png(histogram_figure([kernels[i : i + 3] for i in range(0, len(kernels), 3)]))
    return WeightHistogramsResponse(
        stage=stage,
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
        model=model_ref(loaded),
    )
