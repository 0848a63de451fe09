"""What a layer makes of an image, as one vector: the layer's activations averaged over its spatial
positions. Example-based explanations index a dataset by these vectors and answer the images whose
vectors lie nearest a query's.

The default layer is the one that feeds the classifier: the last layer with a spatial output,
unless that layer has one channel per class (the All-CNN's 1x1 convolution to 10 class maps, which
holds little more than the prediction), in which case the one before it. Calls go through a batcher
of the layer's own, so a job's rows wait for online requests as every other job's do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from mindscope.engine.batching import FORWARD_BATCHING, DynamicBatcher
from mindscope.engine.layer_paths import tap
from mindscope.engine.loaded_model import LayerInfo, LoadedModel
from mindscope.engine.model_calls import Compiled
from mindscope.errors import InvalidInput


def default_layer(model: LoadedModel) -> LayerInfo:
    """The layer whose pooled activations embed an image by default (see the module's text)."""
    model.require_layers("an embedding of its images (a layer's pooled activations)")
    layers = [info for info in model.layers if len(info.output_shape) == 3]
    if not layers:
        raise InvalidInput(f"{model.ref.label} has no layer with a spatial output to embed images with")
    last = layers[-1]
    if last.output_shape[-1] == len(model.class_names) and len(layers) > 1:
        return layers[-2]
    return last


def embedding_layer(model: LoadedModel, key: str | None) -> LayerInfo:
    """The layer `key` names (404 listing the layers when none does), or the default."""
    if key is None:
        return default_layer(model)
    info = model.layer(key)
    if len(info.output_shape) != 3:
        raise InvalidInput(f"layer {info.name} has no (height, width, channels) output to pool", layer=info.name)
    return info


def embed(model: LoadedModel, layer: str, images: np.ndarray) -> np.ndarray:
    """float32 (N, H, W, C) images in [0, 1] -> float32 (N, channels): `layer`'s activations averaged
    over height and width, batched with concurrent callers (a job's on the background lane)."""
    (vectors,) = _batcher(model, layer).submit(np.asarray(images, np.float32))
    return vectors


def _batcher(model: LoadedModel, layer: str) -> DynamicBatcher:
    return _lane(model, f"embedding:{layer}", layer, lambda activations: tf.reduce_mean(activations, axis=(1, 2)))


def channel_peaks(model: LoadedModel, layer: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (N, H, W, C) images -> ((N, channels) each channel's largest activation over the
    layer's positions, (N, channels) the flat position (row * width + column) where it is)."""
    peaks, positions = _lane(model, f"peaks:{layer}", layer, _peaks).submit(np.asarray(images, np.float32))
    return peaks, positions


def receptive_box(model: LoadedModel, layer: str, image: np.ndarray, channel: int, position: int) -> tuple[int, ...]:
    """(top, left, bottom, right), bottom and right exclusive: the input pixels whose values move the
    activation of `channel` at flat `position` of `layer` for this image (where its gradient with
    respect to the input is not zero): the unit's receptive field, as the network computes it."""
    key = f"unit-gradient:{layer}"
    function = model.extensions.get(key)
    if function is None:
        tapped = tap(model.model, [layer])
        preprocess = model.input_spec.apply

        def unit_gradient(images: tf.Tensor, units: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(images)
                (activations,) = tapped(preprocess(images))
                flat = tf.reshape(activations, [tf.shape(activations)[0], -1])
                selected = tf.gather(flat, units, batch_dims=1)
            return tape.gradient(selected, images)

        spec = tf.TensorSpec([None, *model.input_shape], tf.float32)
        function = model.extensions.setdefault(key, Compiled(unit_gradient, [spec, tf.TensorSpec([None], tf.int32)]))
    channels = model.layer(layer).output_shape[-1]
    unit = np.asarray([position * channels + channel], np.int32)
    gradient = np.abs(function(tf.convert_to_tensor(image[None], tf.float32), tf.convert_to_tensor(unit)).numpy()[0])
    moving = gradient.max(axis=-1) > 0
    if not moving.any():
        return (0, 0, image.shape[0], image.shape[1])
    rows, columns = np.flatnonzero(moving.any(axis=1)), np.flatnonzero(moving.any(axis=0))
    return (int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1)


def _peaks(activations: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    flat = tf.reshape(activations, [tf.shape(activations)[0], -1, tf.shape(activations)[-1]])
    return tf.reduce_max(flat, axis=1), tf.cast(tf.argmax(flat, axis=1), tf.int32)


def _lane(model: LoadedModel, key: str, layer: str, reduce: Any) -> DynamicBatcher:
    batcher = model.extensions.get(key)
    if batcher is None:
        tapped = tap(model.model, [layer])
        preprocess = model.input_spec.apply

        def reduced(images: tf.Tensor) -> Any:
            (activations,) = tapped(preprocess(images))
            return reduce(activations)

        compiled = Compiled(reduced, [tf.TensorSpec([None, *model.input_shape], tf.float32)])

        def run(images: np.ndarray) -> tuple[np.ndarray, ...]:
            outputs = compiled(tf.convert_to_tensor(images))
            outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
            return tuple(out.numpy() for out in outputs)

        made = DynamicBatcher(run, FORWARD_BATCHING, f"{model.ref.label}-{key}", activity=model.online_activity)
        batcher = model.extensions.setdefault(key, made)
        if batcher is not made:  # another thread made it first
            made.close()
    return batcher
