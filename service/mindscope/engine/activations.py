"""Layer outputs and their per-channel statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mindscope.engine.runtime import LayerInfo, LoadedModel
from mindscope.errors import InvalidInput


@dataclass(frozen=True)
class LayerActivations:
    """values: float32 (H, W, C) for the selected channels; statistics are per selected channel."""

    layer: LayerInfo
    channels: np.ndarray
    values: np.ndarray
    mean: np.ndarray
    max: np.ndarray
    fraction_positive: np.ndarray


def select_channels(layer: LayerInfo, channels: list[int] | None, default_count: int = 27) -> np.ndarray:
    """Explicit channel indices, or the first `default_count` (the seed's grid of 27)."""
    available = layer.output_shape[-1]
    if channels is None:
        return np.arange(min(default_count, available))
    bad = [c for c in channels if not 0 <= c < available]
    if bad:
        raise InvalidInput(
            f"{layer.name} has channels 0-{available - 1}; got {bad}", layer=layer.name, channels=available
        )
    return np.asarray(channels, dtype=np.int64)


def layer_activations(
    loaded: LoadedModel, image: np.ndarray, layer_key: str, channels: list[int] | None = None
) -> LayerActivations:
    """Activations of one conv layer for float32 (32, 32, 3) `image` in [0, 1]."""
    layer = loaded.layer(layer_key)
    selected = select_channels(layer, channels)
    values = loaded.activations(image[None])[layer.index - 1][0][..., selected]
    return LayerActivations(
        layer=layer,
        channels=selected,
        values=values,
        mean=values.mean(axis=(0, 1)),
        max=values.max(axis=(0, 1)),
        fraction_positive=(values > 0).mean(axis=(0, 1)),
    )


def animation_frames(loaded: LoadedModel, image: np.ndarray, layer_keys: tuple[str, ...]) -> list[np.ndarray]:
    """The activations of each named layer (all channels), float32 (H, W, C) each, for the GIF."""
    outputs = loaded.activations(image[None])
    return [outputs[loaded.layer(key).index - 1][0] for key in layer_keys]
