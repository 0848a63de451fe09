"""Layer outputs and their per-channel statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mindscope.engine.loaded_model import LayerInfo, LoadedModel
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
    """Activations of one layer for float32 (H, W, C) `image` in [0, 1], the model's input shape."""
    layer = loaded.layer(layer_key)
    return _selected(layer, loaded.activations(image[None])[layer.index - 1][0], select_channels(layer, channels))


def _selected(layer: LayerInfo, outputs: np.ndarray, selected: np.ndarray) -> LayerActivations:
    values = outputs[..., selected]
    return LayerActivations(
        layer=layer,
        channels=selected,
        values=values,
        mean=values.mean(axis=(0, 1)),
        max=values.max(axis=(0, 1)),
        fraction_positive=(values > 0).mean(axis=(0, 1)),
    )


def animation_frames(loaded: LoadedModel, image: np.ndarray, layer_keys: tuple[str, ...]) -> list[LayerActivations]:
    """The default channels of each named layer, from one forward pass, for the GIF."""
    outputs = loaded.activations(image[None])
    layers = [loaded.layer(key) for key in layer_keys]
    return [_selected(layer, outputs[layer.index - 1][0], select_channels(layer, None)) for layer in layers]


def is_class_layer(loaded: LoadedModel, layer: LayerInfo) -> bool:
    """The last layer with one channel per class (the All-CNN's conv9, whose pooled channels are the
    class scores): its channels are named by class and compared on one scale."""
    return layer.index == len(loaded.layers) and layer.output_shape[-1] == len(loaded.class_names)


def channel_labels(loaded: LoadedModel, result: LayerActivations) -> list[str]:
    """A label per selected channel: its index, and its class name on the class layer; a channel
    that is one value everywhere says so (it draws as a flat panel)."""
    named = is_class_layer(loaded, result.layer)
    labels = []
    for position, c in enumerate(result.channels):
        label = f"{c} {loaded.class_names[c]}" if named else f"ch {c}"
        tile = result.values[..., position]
        if tile.size and float(tile.min()) == float(tile.max()):
            label += f": all {float(tile.min()):.3g}"
        labels.append(label)
    return labels
