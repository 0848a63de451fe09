"""Result objects. Arrays come back as numpy arrays (shape restored) when numpy is installed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str
    format: str


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


@dataclass(frozen=True)
class Completeness:
    attribution_sum: float
    output_at_input: float
    output_at_baseline: float
    delta: float
    relative_delta: float


@dataclass(frozen=True)
class Attribution:
    target: int
    label: str
    method: str
    baseline: str
    steps: int
    gradient_evaluations: int
    attributions: Any  # (32, 32, 3) float32
    completeness: Completeness
    probabilities: Any
    classes: list[str]
    model: ModelRef


@dataclass(frozen=True)
class InteriorGradients:
    target: int
    label: str
    alphas: Any
    outputs: Any
    gradients: Any  # (len(alphas), 32, 32, 3)
    model: ModelRef


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
