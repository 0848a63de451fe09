"""What a layer makes of an image, as one vector: the layer's activations averaged over its spatial
positions. Example-based explanations index a dataset by these vectors and answer the images whose
vectors lie nearest a query's.

The default layer is the one that feeds the classifier: the last layer with a spatial output,
unless that layer has one channel per class (the All-CNN's 1x1 convolution to 10 class maps, which
holds little more than the prediction), in which case the one before it. Calls go through a batcher
of the layer's own, so a job's rows wait for online requests as every other job's do.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mindscope.engine.batching import FORWARD_BATCHING, DynamicBatcher
from mindscope.engine.layer_paths import tap
from mindscope.engine.loaded_model import LayerInfo, LoadedModel
from mindscope.engine.model_calls import Compiled
from mindscope.errors import InvalidInput


def default_layer(model: LoadedModel) -> LayerInfo:
    """The layer whose pooled activations embed an image by default (see the module's text)."""
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
    key = f"embedding:{layer}"
    batcher = model.extensions.get(key)
    if batcher is None:
        tapped = tap(model.model, [layer])
        preprocess = model.input_spec.apply

        def pooled(images: tf.Tensor) -> tf.Tensor:
            (activations,) = tapped(preprocess(images))
            return tf.reduce_mean(activations, axis=(1, 2))

        compiled = Compiled(pooled, [tf.TensorSpec([None, *model.input_shape], tf.float32)])
        made = DynamicBatcher(
            lambda images: (compiled(tf.convert_to_tensor(images)).numpy(),),
            FORWARD_BATCHING,
            f"{model.ref.label}-{layer}-embedding",
            activity=model.online_activity,
        )
        batcher = model.extensions.setdefault(key, made)
        if batcher is not made:  # another thread made it first
            made.close()
    return batcher
