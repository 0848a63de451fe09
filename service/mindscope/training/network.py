"""The seed's All-Convolutional Network, in two forms with the same layer names.

- The *training* form puts BatchNormalization between each 3x3/1x1 convolution and its ELU, which
  lets the net train to >85% in a dozen CPU epochs.
- The *serving* form is the seed's plain net: Conv2D(+bias, ELU) x 8, a linear 1x1 Conv2D to the
  classes, global average pooling, softmax. `fold_batch_norm` turns a trained training-form model
  into it exactly (in inference mode), so "the output after layer 3" is the output of `conv3`.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

BATCH_NORM_EPSILON = 1e-3


@dataclass(frozen=True)
class ConvSpec:
    name: str
    kernel_size: int
    stage: int  # 0: 32x32 (conv1-3), 1: 16x16 (conv4-6), 2: 8x8 (conv7-8); conv9 maps to the classes
    init_stddev: float
    pool_after: bool = False


# Per-layer kernel initialisation stddev, in the seed's 0.04-0.06 range.
CONV_SPECS: tuple[ConvSpec, ...] = (
    ConvSpec("conv1", 3, 0, 0.06),
    ConvSpec("conv2", 3, 0, 0.05),
    ConvSpec("conv3", 3, 0, 0.05, pool_after=True),
    ConvSpec("conv4", 3, 1, 0.05),
    ConvSpec("conv5", 3, 1, 0.05),
    ConvSpec("conv6", 3, 1, 0.04, pool_after=True),
    ConvSpec("conv7", 3, 2, 0.04),
    ConvSpec("conv8", 1, 2, 0.05),
    ConvSpec("conv9", 1, 2, 0.06),
)
CONV_NAMES: tuple[str, ...] = tuple(spec.name for spec in CONV_SPECS)
INPUT_SHAPE = (32, 32, 3)


def init_stddevs() -> dict[str, float]:
    return {spec.name: spec.init_stddev for spec in CONV_SPECS}


def _initializer(spec: ConvSpec, seed: int, index: int) -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(stddev=spec.init_stddev, seed=seed * 100 + index)


Widths = tuple[int, int, int]
SEED_WIDTHS: Widths = (128, 128, 128)


def build_training_model(widths: Widths = SEED_WIDTHS, num_classes: int = 10, seed: int = 0) -> keras.Model:
    """Conv -> BatchNorm -> ELU blocks; conv9 is linear with a bias. Input float32 (N, 32, 32, 3) in [0, 1]."""
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = inputs
    for index, spec in enumerate(CONV_SPECS):
        last = index == len(CONV_SPECS) - 1
        filters = num_classes if last else widths[spec.stage]
        x = keras.layers.Conv2D(
            filters,
            spec.kernel_size,
            padding="same",
            use_bias=last,
            kernel_initializer=_initializer(spec, seed, index),
            name=spec.name,
        )(x)
        if not last:
            x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{spec.name}_bn")(x)
            x = keras.layers.Activation("elu", name=f"{spec.name}_elu")(x)
        if spec.pool_after:
            x = keras.layers.AveragePooling2D(2, name=f"pool{index // 3 + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name="allcnn_training")


def build_serving_model(widths: Widths = SEED_WIDTHS, num_classes: int = 10, seed: int = 0) -> keras.Model:
    """The seed's net: Conv2D(ELU) x 8 with biases, linear 1x1 conv9, global average pool, softmax.

    Its kernels start from the seed's per-layer normal initialisation and its biases at 0, so it is
    also the network the seed trained (`TrainConfig(batch_norm=False)`).
    """
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = inputs
    for index, spec in enumerate(CONV_SPECS):
        last = index == len(CONV_SPECS) - 1
        x = keras.layers.Conv2D(
            num_classes if last else widths[spec.stage],
            spec.kernel_size,
            padding="same",
            activation=None if last else "elu",
            kernel_initializer=_initializer(spec, seed, index),
            name=spec.name,
        )(x)
        if spec.pool_after:
            x = keras.layers.AveragePooling2D(2, name=f"pool{index // 3 + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name="allcnn")


def widths_of(model: keras.Model) -> Widths:
    return (
        model.get_layer("conv1").filters,
        model.get_layer("conv4").filters,
        model.get_layer("conv7").filters,
    )


def fold_batch_norm(training_model: keras.Model) -> keras.Model:
    """The serving-form model computing what `training_model` computes in inference mode.

    BN(conv(x)) = gamma * (W*x - mean) / sqrt(var + eps) + beta, so the folded kernel is
    W * gamma / sqrt(var + eps) per output channel and the bias beta - mean * that same scale.
    """
    serving = build_serving_model(widths_of(training_model), training_model.output_shape[-1])
    for spec in CONV_SPECS[:-1]:
        (kernel,) = training_model.get_layer(spec.name).get_weights()
        gamma, beta, mean, var = training_model.get_layer(f"{spec.name}_bn").get_weights()
        scale = gamma / np.sqrt(var + BATCH_NORM_EPSILON)
        serving.get_layer(spec.name).set_weights([kernel * scale, beta - mean * scale])
    last = CONV_NAMES[-1]
    serving.get_layer(last).set_weights(training_model.get_layer(last).get_weights())
    return serving
