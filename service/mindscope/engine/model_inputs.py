"""What a model takes: its input shape, and how an image in [0, 1] becomes its input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

INPUT_RANGES = ("0-1", "0-255", "-1-1", "mean-std")


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: its input shape, and how an image in [0, 1] becomes its input.

    `range`: "0-1" (as decoded), "0-255", "-1-1", or "mean-std" ((x - mean) / std per channel,
    x in [0, 1]); read from metadata `preprocessing.input_range` ("0-1" when absent, as for the
    models mindscope trains). The service decodes every image to [0, 1] and applies this inside
    the compiled functions, so attributions are always per pixel of the image in [0, 1].
    """

    shape: tuple[int, int, int]  # (height, width, channels)
    range: str = "0-1"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> InputSpec:
        height, width, channels = metadata["input_shape"]
        preprocessing = metadata.get("preprocessing") or {}
        mean, std = preprocessing.get("mean"), preprocessing.get("std")
        return cls(
            (int(height), int(width), int(channels)),
            preprocessing.get("input_range", "0-1"),
            None if mean is None else tuple(float(m) for m in mean),
            None if std is None else tuple(float(s) for s in std),
        )

    def apply(self, images: tf.Tensor) -> tf.Tensor:
        if self.range == "0-255":
            return images * 255.0
        if self.range == "-1-1":
            return images * 2.0 - 1.0
        if self.range == "mean-std":
            return (images - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)
        return images
