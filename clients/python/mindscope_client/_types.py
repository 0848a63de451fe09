"""Result objects. Arrays come back as numpy arrays (shape restored) when numpy is installed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable


@dataclass(frozen=True)
class ArrayData:
    """An array without numpy: `data` is flat, row-major; `shape` says how to read it."""

    shape: tuple[int, ...]
    dtype: str
    data: list[float]


def to_array(payload: dict[str, Any]) -> Any:
    """{shape, dtype, data} -> numpy.ndarray of that shape (ArrayData when numpy is missing)."""
    try:
        import numpy as np
    except ImportError:
        return ArrayData(tuple(payload["shape"]), payload["dtype"], payload["data"])
    return np.asarray(payload["data"], dtype=payload["dtype"]).reshape(payload["shape"])


@runtime_checkable
class ArrayLike(Protocol):
    """A numpy-style array: (H, W, C), uint8 in 0-255 or float in 0-1."""

    shape: tuple[int, ...]
    dtype: Any
    __array_interface__: dict[str, Any]


@runtime_checkable
class PILImageLike(Protocol):
    mode: str
    size: tuple[int, int]

    def save(self, fp: Any, format: str | None = None, **params: Any) -> None: ...


# One image: a file path, encoded bytes (PNG/JPEG/WebP), a PIL image or an HWC array.
ImageInput = str | os.PathLike[str] | bytes | bytearray | ArrayLike | PILImageLike

D = TypeVar("D")


def from_body(cls: type[D], body: dict[str, Any]) -> D:
    """The dataclass from a JSON object, ignoring fields a newer server adds."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{key: value for key, value in body.items() if key in names})


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: list[int]
    default_version: int


@dataclass(frozen=True)
class ModelList:
    """The stored models, and the version that serves requests naming none."""

    models: list[ModelSummary]
    default: ModelRef | None


@dataclass(frozen=True)
class ImageInfo:
    """What the service received; exif_orientation other than 1 was applied (the image turned upright)."""

    width: int
    height: int
    mode: str
    format: str
    exif_orientation: int = 1


@dataclass(frozen=True)
class Prediction:
    label: str
    class_index: int
    confidence: float
    probabilities: Any  # (classes,) float32
    classes: list[str]
    input: ImageInfo
    model: ModelRef | None = None


@dataclass(frozen=True)
class Activations:
    layer: str
    layer_index: int
    output_shape: tuple[int, ...]
    channels: list[int]
    values: Any  # (H, W, len(channels)) float32
    mean: Any
    max: Any
    fraction_positive: Any
    model: ModelRef


@dataclass(frozen=True)
class Histogram:
    layer: str
    parameter: str
    shape: tuple[int, ...]
    edges: Any  # (bins + 1,)
    counts: dict[str, Any]  # stage -> (bins,) int64
    stats: dict[str, dict[str, float]]  # stage -> mean, std, min, max
    relative_change: float | None
    source: str  # "served" or "learned" (BatchNorm unfolded)


@dataclass(frozen=True)
class Completeness:
    attribution_sum: float
    output_at_input: float
    output_at_baseline: float
    delta: float
    relative_delta: float


@dataclass(frozen=True)
class Tolerance:
    """What `tolerance` asked for, and whether the answer reached it before the server's steps cap."""

    requested: float
    met: bool
    relative_delta: float
    max_steps: int


@dataclass(frozen=True)
class Attribution:
    target: int
    label: str
    method: str
    baseline: str
    steps: int
    gradient_evaluations: int
    attributions: Any  # (H, W, C) float32, like the model's input
    completeness: Completeness
    probabilities: Any
    classes: list[str]
    model: ModelRef
    tolerance: Tolerance | None = None
    score: str = "probability"  # what was differentiated: "probability" or "logit"
    smoothing: dict[str, Any] | None = None  # SmoothGrad's samples, noise, kind and seed, when asked


@dataclass(frozen=True)
class Explanation:
    """Any method's answer (POST /explain/{method}).

    attributions: (H, W, C) like the input, or (H, W, 1) for Grad-CAM and occlusion.
    evaluation: with `evaluate=...`, {"deletion": {"fractions", "scores", "area"}, "insertion": ...,
    "sanity": {"rank_correlation", "target"}} as the service sent it; None otherwise.
    values: what one value of the map is, in words (occlusion: a fall in probability).
    """

    method: str
    target: int
    label: str
    score: str
    attributions: Any
    parameters: dict[str, Any]
    gradient_evaluations: int
    forward_evaluations: int
    seconds: float
    probabilities: Any
    classes: list[str]
    model: ModelRef
    evaluation: dict[str, Any] | None = None
    values: str = ""


@dataclass(frozen=True)
class Feature:
    """What one channel looks for: the image that most activates it (GET /visualize)."""

    layer: str
    channel: int
    image: Any  # (H, W, C) in [0, 1], the model's input shape
    activation: float  # the channel's mean activation on it
    on_noise: float  # ... and on uniform noise, for scale


@dataclass(frozen=True)
class InteriorGradients:
    target: int
    label: str
    alphas: Any
    outputs: Any
    gradients: Any  # (len(alphas), H, W, C)
    model: ModelRef
    score: str = "probability"


@dataclass(frozen=True)
class ImageResult:
    """A PNG or GIF the service drew.

    summary: the figures the service sent beside the picture, e.g. for integrated gradients
    {"target-label": "cat", "steps": "50", "relative-delta": "0.0001", ...} (its X-IG-* headers).
    """

    data: bytes
    media_type: str = field(default="image/png")
    summary: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_bytes(self.data)
        return target

    def image(self) -> Any:
        """The picture as a PIL image (needs Pillow)."""
        import io

        from PIL import Image

        picture = Image.open(io.BytesIO(self.data))
        picture.load()
        return picture
