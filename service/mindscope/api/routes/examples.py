"""Example-based explanations: the dataset images a model thinks a query is like, from an index an
`index` job built for the model version (POST /jobs {"kind": "index", ...}).

POST /explain/examples?index=NAME&k=9 answers the k nearest images (cosine distance between the
layer's spatially pooled activations) with their sources, labels, distances and thumbnails, or a
PNG grid titled with the query's prediction. GET lists the model version's indexes; DELETE removes
one. Registered before the methods' routes, so `examples` is never taken for a method's name."""

from __future__ import annotations

import base64
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from PIL import Image
from pydantic import BaseModel, Field

from mindscope.api.codecs import IMAGE_REQUEST_BODY, wants_png
from mindscope.api.deps import DecodedDep, FormatQuery, ModelDep
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.responses import PNG_RESPONSE, json_response, model_ref, picture_response
from mindscope.api.schemas import ModelRefOut
from mindscope.dataplane.decoding import ImageInfo
from mindscope.engine.embedding import embed
from mindscope.jobs.indexes import IndexInfo, IndexStore, Neighbour
from mindscope.jobs.service import JobService
from mindscope.render.examples import examples_grid

router = APIRouter(prefix="/explain/examples", tags=["explain"])
MAX_K = 100


class IndexOut(BaseModel):
    name: str
    layer: str = Field(description="the layer whose spatially pooled activations embed the images")
    count: int = Field(description="images in the index")
    dimensions: int
    search: str = Field(description="exact (one matrix product) or hnsw (usearch's graph) past 20,000 images")
    job: str | None = Field(description="the index job that built it")
    created: float = Field(description="seconds since the epoch")

    @classmethod
    def of(cls, info: IndexInfo) -> IndexOut:
        return cls(**{name: getattr(info, name) for name in cls.model_fields})


class IndexesOut(BaseModel):
    model: ModelRefOut
    indexes: list[IndexOut]


class NeighbourOut(BaseModel):
    rank: int = Field(description="1: the nearest")
    row: int = Field(description="the image's row in the index")
    source: str = Field(description="the image's path in the indexed folder or archive")
    label: str | None = Field(description="its class, from its class-named folder; null when unknown")
    distance: float = Field(description="cosine distance, 1 - cos, of the pooled activations: 0 for the same vector")
    thumbnail: str = Field(description="a PNG thumbnail as a data: URL")


class PredictionOut(BaseModel):
    label: str
    class_index: int
    confidence: float


class ExamplesOut(BaseModel):
    model: ModelRefOut
    index: IndexOut
    prediction: PredictionOut = Field(description="the model's prediction for the query")
    neighbours: list[NeighbourOut]
    input: ImageInfo


def _indexes(request: Request) -> IndexStore:
    jobs: JobService = request.app.state.jobs
    return jobs.indexes


def _data_url(thumbnail: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(thumbnail).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _caption(neighbour: Neighbour, rank: int) -> str:
    return f"{rank}. {neighbour.label or '?'}\nd = {neighbour.distance:.3f}"


@router.get("", response_model=IndexesOut, responses=ERROR_RESPONSES, summary="The model version's example indexes")
def list_indexes(request: Request, loaded: ModelDep) -> Response:
    listed = _indexes(request).listed(loaded.ref.name, loaded.ref.version)
    return json_response(IndexesOut(model=model_ref(loaded), indexes=[IndexOut.of(info) for info in listed]))


@router.post(
    "",
    response_model=ExamplesOut,
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={**ERROR_RESPONSES, 200: PNG_RESPONSE},
    summary="The indexed dataset images nearest the query, as the model sees them",
)
def explain_examples(
    request: Request,
    loaded: ModelDep,
    decoded: DecodedDep,
    index: Annotated[str, Query(max_length=64, description="an index of the model version (GET lists them)")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many neighbours")] = 9,
    exact: Annotated[bool, Query(description="search every vector, even where the index has a graph")] = False,
    format: FormatQuery = None,
) -> Response:
    image = decoded.single()
    found = _indexes(request).get(loaded.ref.name, loaded.ref.version, index)
    probabilities = loaded.predict(image.pixels[None])[0]
    top = int(np.argmax(probabilities))
    vector = embed(loaded, found.info.layer, image.pixels[None])[0]
    neighbours = found.search(vector, k, exact=exact)
    label = loaded.class_names[top]
    if wants_png(request, format):
        title = (
            f"{loaded.ref.label} predicts {label} (p = {probabilities[top]:.2f}); its {len(neighbours)} nearest "
            f"images in {found.info.name}\n(cosine distance of {found.info.layer}'s pooled activations)"
        )
        captions = [_caption(n, rank) for rank, n in enumerate(neighbours, start=1)]
        return picture_response(examples_grid(image.pixels, [n.thumbnail for n in neighbours], captions, title))
    return json_response(
        ExamplesOut(
            model=model_ref(loaded),
            index=IndexOut.of(found.info),
            prediction=PredictionOut(label=label, class_index=top, confidence=float(probabilities[top])),
            neighbours=[
                NeighbourOut(
                    rank=rank,
                    row=n.row,
                    source=n.source,
                    label=n.label,
                    distance=n.distance,
                    thumbnail=_data_url(n.thumbnail),
                )
                for rank, n in enumerate(neighbours, start=1)
            ],
            input=image.info,
        )
    )


@router.delete("/{name}", status_code=204, responses=ERROR_RESPONSES, summary="Delete an example index")
def delete_index(request: Request, loaded: ModelDep, name: str) -> Response:
    _indexes(request).delete(loaded.ref.name, loaded.ref.version, name)
    return Response(status_code=204)
