"""Layers by path, inside nested models too, tapped in one forward pass."""

import keras
import numpy as np
import pytest
from mindscope.engine.layer_paths import find_layer, output_shape, spatial_layer_names, tap, weighted_layer_names


def backbone() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="b_conv")(inputs)
    x = keras.layers.BatchNormalization(name="b_bn")(x)
    return keras.Model(inputs, keras.layers.ReLU(name="b_relu")(x), name="backbone")


def wrapped_in_sequential(tmp_path) -> keras.Model:
    """A Sequential around a functional backbone, saved and loaded as the service loads it
    (a loaded Sequential's layers keep nodes of earlier builds)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(2.0, name="scale"),
            backbone(),
            keras.layers.Conv2D(3, 1, name="head_conv"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Softmax(name="probabilities"),
        ]
    )
    model.save(tmp_path / "wrapped.keras")
    return keras.saving.load_model(tmp_path / "wrapped.keras", safe_mode=True)


def test_layers_inside_a_nested_model_are_named_by_path_and_tapped_in_one_pass(tmp_path):
    model = wrapped_in_sequential(tmp_path)
    names = spatial_layer_names(model)
    assert names == ["scale", "backbone", "backbone/b_conv", "backbone/b_bn", "backbone/b_relu", "head_conv"]
    assert weighted_layer_names(model) == ["backbone/b_conv", "backbone/b_bn", "head_conv"]
    assert output_shape(model, "backbone/b_bn") == (8, 8, 4)
    assert find_layer(model, "backbone/b_relu") is model.get_layer("backbone").get_layer("b_relu")

    images = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    inner = model.get_layer("backbone")
    conv = keras.Model(inner.input, inner.get_layer("b_conv").output)(images * 2.0)
    outputs = tap(model, ["head_conv", "backbone/b_conv", "backbone"])(images)
    np.testing.assert_allclose(np.asarray(outputs[1]), np.asarray(conv), atol=1e-6)
    np.testing.assert_allclose(np.asarray(outputs[2]), np.asarray(inner(images * 2.0)), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(outputs[0]), np.asarray(model.get_layer("head_conv")(inner(images * 2.0))), atol=1e-5
    )


def test_a_layer_called_twice_has_no_one_output_and_is_left_out():
    inputs = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    x = shared(shared(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    assert spatial_layer_names(model) == []
    assert weighted_layer_names(model) == ["shared", "head"]
    with pytest.raises(ValueError, match="called more than once"):
        tap(model, ["shared"])
