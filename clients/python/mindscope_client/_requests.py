"""Request building and response parsing shared by Client and AsyncClient (no I/O here)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mindscope_client._types import (
    Activations,
    Attribution,
    Completeness,
    Explanation,
    Feature,
    Histogram,
    ImageInfo,
    InteriorGradients,
    ModelList,
    ModelRef,
    ModelSummary,
    Prediction,
    Tolerance,
    from_body,
    to_array,
)

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


@dataclass
class RequestSpec:
    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    content: bytes | None = None
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    binary: bool = False  # the answer is a PNG/GIF


def media_type(data: bytes) -> str:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"  # the service answers 415 with what it accepts


def _is_array(image: Any) -> bool:
    return hasattr(image, "__array_interface__") and hasattr(image, "dtype") and hasattr(image, "shape")


def _is_pil(image: Any) -> bool:
    return hasattr(image, "save") and hasattr(image, "mode") and hasattr(image, "size")


def _image_bytes(image: Any) -> bytes:
    """A path, bytes or a PIL image -> encoded image bytes."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if _is_pil(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"cannot send {type(image).__name__} as an image: give a path, bytes, a PIL image or an array")


def _instance(image: Any) -> tuple[Any, str | None]:
    """(JSON instance, value range of an array instance or None)."""
    if _is_array(image):
        shape = tuple(image.shape)
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
            raise ValueError(
                f"array images must be HWC with 1 or 3 channels (or HW), at the model's input size; got {shape}"
            )
        value_range = "0-255" if image.dtype.kind in "ui" else "0-1"
        return image.tolist(), value_range
    return {"b64": base64.b64encode(_image_bytes(image)).decode("ascii")}, None


def image_body(spec: RequestSpec, image: Any, baseline: Any = None) -> RequestSpec:
    """One image (and optionally a baseline image) as the request body, in the most compact form."""
    if _is_array(image) or (baseline is not None and _is_array(baseline)):
        instance, value_range = _instance(image)
        body: dict[str, Any] = {"instances": [instance]}
        if baseline is not None:
            body["baseline"], baseline_range = _instance(baseline)
            value_range = value_range or baseline_range
        if value_range:
            body["value_range"] = value_range
        spec.json = body
    elif baseline is not None:
        data, baseline_data = _image_bytes(image), _image_bytes(baseline)
        spec.files = {
            "file": ("image", data, media_type(data)),
            "baseline": ("baseline", baseline_data, media_type(baseline_data)),
        }
    else:
        spec.content = _image_bytes(image)
        spec.headers["Content-Type"] = media_type(spec.content)
    return spec


def batch_body(spec: RequestSpec, images: list[Any]) -> RequestSpec:
    instances = [_instance(image) for image in images]
    ranges = {value_range for _, value_range in instances if value_range}
    if len(ranges) > 1:
        raise ValueError("a batch cannot mix uint8 and float arrays; convert them to one dtype")
    spec.json = {"instances": [instance for instance, _ in instances]}
    if ranges:
        spec.json["value_range"] = ranges.pop()
    return spec


def model_params(model: str | None, version: int | None) -> list[tuple[str, str]]:
    params = [] if model is None else [("model", model)]
    return params + ([] if version is None else [("version", str(version))])


def png_params(as_png: bool) -> list[tuple[str, str]]:
    return [("format", "png")] if as_png else []


# --- parsing -------------------------------------------------------------------------------


def _ref(body: dict[str, Any]) -> ModelRef:
    return ModelRef(body["model"]["name"], body["model"]["version"])


def _prediction(body: dict[str, Any], model: ModelRef | None) -> Prediction:
    return Prediction(
        label=body["label"],
        class_index=body["class_index"],
        confidence=body["confidence"],
        probabilities=to_array(body["probabilities"]),
        classes=body["classes"],
        input=from_body(ImageInfo, body["input"]),
        model=model,
    )


def parse_predictions(body: dict[str, Any]) -> list[Prediction]:
    model = _ref(body)
    rows = body["predictions"] if "predictions" in body else [body]
    return [_prediction(row, model) for row in rows]


def parse_models(body: dict[str, Any]) -> ModelList:
    default = body.get("default")
    return ModelList(
        models=[from_body(ModelSummary, model) for model in body["models"]],
        default=None if default is None else ModelRef(default["name"], default["version"]),
    )


def parse_activations(body: dict[str, Any]) -> Activations:
    stats = body["statistics"]
    return Activations(
        layer=body["layer"]["name"],
        layer_index=body["layer"]["index"],
        output_shape=tuple(body["layer"]["output_shape"]),
        channels=body["channels"],
        values=to_array(body["activations"]),
        mean=to_array(stats["mean"]),
        max=to_array(stats["max"]),
        fraction_positive=to_array(stats["fraction_positive"]),
        model=_ref(body),
    )


def parse_histograms(body: dict[str, Any]) -> list[Histogram]:
    return [
        Histogram(
            layer=h["layer"],
            parameter=h["parameter"],
            shape=tuple(h["shape"]),
            edges=to_array(h["edges"]),
            counts={stage: to_array(s["counts"]) for stage, s in h["stages"].items()},
            stats={stage: {k: s[k] for k in ("mean", "std", "min", "max")} for stage, s in h["stages"].items()},
            relative_change=h["relative_change"],
            source=body["source"],
        )
        for h in body["histograms"]
    ]


def parse_attribution(body: dict[str, Any]) -> Attribution:
    return Attribution(
        target=body["target"]["index"],
        label=body["target"]["label"],
        method=body["method"],
        baseline=body["baseline"],
        steps=body["steps"],
        gradient_evaluations=body["gradient_evaluations"],
        attributions=to_array(body["attributions"]),
        completeness=from_body(Completeness, body["completeness"]),
        probabilities=to_array(body["probabilities"]),
        classes=body["classes"],
        model=_ref(body),
        tolerance=from_body(Tolerance, body["tolerance"]) if body.get("tolerance") else None,
        score=body.get("score", "probability"),
        smoothing=body.get("smoothing"),
    )


def parse_explanation(body: dict[str, Any]) -> Explanation:
    return Explanation(
        method=body["method"],
        target=body["target"]["index"],
        label=body["target"]["label"],
        score=body["score"],
        attributions=to_array(body["attributions"]),
        parameters=body["parameters"],
        gradient_evaluations=body["evaluations"]["gradient"],
        forward_evaluations=body["evaluations"]["forward"],
        seconds=body["seconds"],
        probabilities=to_array(body["probabilities"]),
        classes=body["classes"],
        model=_ref(body),
        evaluation=body.get("evaluation"),
        values=body.get("values", ""),
    )


def parse_features(body: dict[str, Any]) -> list[Feature]:
    layer = body["layer"]["name"]
    return [
        Feature(layer, f["channel"], to_array(f["image"]), f["activation"], f["on_noise"]) for f in body["features"]
    ]


def parse_interior(body: dict[str, Any]) -> InteriorGradients:
    return InteriorGradients(
        target=body["target"]["index"],
        label=body["target"]["label"],
        alphas=to_array(body["alphas"]),
        outputs=to_array(body["outputs"]),
        gradients=to_array(body["gradients"]),
        model=_ref(body),
        score=body.get("score", "probability"),
    )
