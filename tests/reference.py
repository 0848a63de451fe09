"""An independent reference model call for PAIR saliency: gradients and layer values by a
TensorFlow GradientTape written here, forward passes by calling the Keras model, never the
service's own gradient or forward functions (which would make a comparison circular)."""

from collections.abc import Callable

import keras
import numpy as np
import saliency.core as saliency
import tensorflow as tf

TARGET_KEY = "target"


def keras_call_model_function(model: keras.Model, conv_layer: str = "conv9") -> Callable[..., dict]:
    """PAIR's call_model_function for the target's probability of a Keras model ending in softmax."""
    split = keras.Model(model.input, [model.get_layer(conv_layer).output, model.output])

    def call(batch, call_model_args=None, expected_keys=None):
        target = call_model_args[TARGET_KEY]
        images = tf.constant(np.asarray(batch, np.float32))
        if saliency.base.OUTPUT_LAYER_VALUES in expected_keys:
            return {saliency.base.OUTPUT_LAYER_VALUES: model(images, training=False).numpy()[:, target]}
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(images)
            conv, probabilities = split(images, training=False)
            score = probabilities[:, target]
        if saliency.base.INPUT_OUTPUT_GRADIENTS in expected_keys:
            return {saliency.base.INPUT_OUTPUT_GRADIENTS: tape.gradient(score, images).numpy()}
        return {
            saliency.base.CONVOLUTION_LAYER_VALUES: conv.numpy(),
            saliency.base.CONVOLUTION_OUTPUT_GRADIENTS: tape.gradient(score, conv).numpy(),
        }

    return call


class NumpyTwoQuantile:
    """numpy for saliency 0.2.1's guided_ig module, which calls np.quantile(..., interpolation=),
    an argument NumPy 2 removed (it is `method=` now); everything else is numpy itself."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(values, q, interpolation="linear", **kwargs):
        return np.quantile(values, q, method=interpolation, **kwargs)
