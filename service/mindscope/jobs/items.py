"""One item's work, wherever it runs (the embedded runner's threads, a Ray actor): the answer's row
for the results table, the map as .npy bytes, and the explanation to answer the item's route with."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mindscope.dataplane.decoding import DecodedImage, DecodeLimits, decode_image_bytes
from mindscope.engine.explain.runner import Explained, explain
from mindscope.engine.loaded_model import LoadedModel
from mindscope.errors import InvalidImage, MindscopeError, RequestCancelled
from mindscope.jobs.spec import Work


@dataclass(frozen=True)
class ComputedItem:
    result: dict[str, Any] | None
    error: str | None
    seconds: float
    map_bytes: bytes | None = None
    explained: Explained | None = None


def decode_item(data: bytes, limits: DecodeLimits, source: str) -> DecodedImage:
    """An item's file, decoded as a request's image would be; an error names the file."""
    try:
        return decode_image_bytes(data, limits)
    except MindscopeError as exc:
        raise InvalidImage(f"{source} is not an image this service reads ({exc.message})") from None


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def prediction_row(model: LoadedModel, probabilities: np.ndarray, info: dict[str, Any]) -> dict[str, Any]:
    index = int(np.argmax(probabilities))
    return {
        "prediction": model.class_names[index],
        "class_index": index,
        "confidence": float(probabilities[index]),
        "probabilities": [float(p) for p in probabilities],
        "input": info,
    }


def predict_rows(model: LoadedModel, images: list[np.ndarray], infos: list[dict[str, Any]]) -> list[ComputedItem]:
    """One forward call for the images (the batcher splits what exceeds a batch)."""
    began = time.perf_counter()
    probabilities = model.predict(np.stack(images))
    seconds = (time.perf_counter() - began) / len(images)
    return [
        ComputedItem(prediction_row(model, row, info), None, seconds)
        for row, info in zip(probabilities, infos, strict=True)
    ]


def explain_item(model: LoadedModel, work: Work, image: np.ndarray, info: dict[str, Any]) -> ComputedItem:
    """The item's explanation, or its error (the job goes on); a cancelled job's item raises."""
    assert work.method is not None and work.explaining is not None
    began = time.perf_counter()
    try:
        explained = explain(
            model,
            work.method,
            image,
            work.explaining.params,
            work.explaining.ask.target,
            work.context,
            work.evaluate,
        )
    except RequestCancelled:
        raise
    except MindscopeError as exc:
        return ComputedItem(None, exc.message, time.perf_counter() - began)
    row = prediction_row(model, explained.probabilities, info)
    result = explained.explanation
    row |= {
        "target": result.target,
        "target_label": model.class_names[result.target],
        "target_probability": float(explained.probabilities[result.target]),
        "gradient_evaluations": result.gradient_evaluations,
    }
    if result.extra is not None and hasattr(result.extra, "relative_delta"):
        row["completeness_error"] = float(result.extra.relative_delta)
    if explained.evaluation is not None:
        for kind, found in explained.evaluation.curves.items():
            row[f"{kind}_area"] = float(found.area)
        if explained.evaluation.sanity is not None:
            row["sanity_rank_correlation"] = float(explained.evaluation.sanity)
    seconds = time.perf_counter() - began
    return ComputedItem(row, None, seconds, npy_bytes(result.attributions), explained)
