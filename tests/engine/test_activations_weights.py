import h5py
import keras
import numpy as np
import pytest
from mindscope.engine.activations import animation_frames, channel_labels, layer_activations
from mindscope.engine.store import INITIAL_WEIGHTS_FILE
from mindscope.engine.weights import weight_histograms, weight_set
from mindscope.errors import InvalidInput, UnknownLayer
from mindscope.training.network import CONV_NAMES


@pytest.mark.parametrize("key", ["conv3", "6", "conv9"])
def test_activations_equal_a_keras_submodel(committed_model, validation_sample, key):
    image = validation_sample[0][3].astype(np.float32) / 255
    result = layer_activations(committed_model, image, key)
    submodel = keras.Model(committed_model.model.input, committed_model.model.get_layer(result.layer.name).output)
    expected = submodel.predict(image[None], verbose=0)[0][..., result.channels]
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-5)
    assert len(result.channels) == min(27, expected.shape[-1] if key != "conv9" else 10)
    np.testing.assert_allclose(result.mean, expected.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.fraction_positive, (expected > 0).mean(axis=(0, 1)))


def test_layers_resolve_by_name_and_index_only(committed_model, validation_sample):
    image = validation_sample[0][0].astype(np.float32) / 255
    assert layer_activations(committed_model, image, "3").layer.name == "conv3"
    for bad in ("conv10", "0", "10", "pool1", "model", "__class__", "../conv1"):
        with pytest.raises(UnknownLayer) as caught:
            layer_activations(committed_model, image, bad)
        assert caught.value.details["valid_layers"] == list(CONV_NAMES)
    with pytest.raises(InvalidInput):
        layer_activations(committed_model, image, "conv1", channels=[0, 100000])


def test_animation_frames_are_layers_3_6_9(committed_model, validation_sample):
    image = validation_sample[0][0].astype(np.float32) / 255
    frames = animation_frames(committed_model, image, ("conv3", "conv6", "conv9"))
    assert [frame.values.shape for frame in frames] == [(32, 32, 27), (16, 16, 27), (8, 8, 10)]
    assert [frame.layer.name for frame in frames] == ["conv3", "conv6", "conv9"]
    assert channel_labels(committed_model, frames[2])[8] == "8 ship"  # conv9 has a channel per class
    assert channel_labels(committed_model, frames[0])[:2] == ["ch 0", "ch 1"]


def test_histogram_counts_cover_every_weight_and_share_edges(committed_model):
    histograms = weight_histograms(weight_set(committed_model), "both", None, bins=40)
    assert [(h.layer, h.parameter) for h in histograms][:2] == [("conv1", "kernel"), ("conv1", "bias")]
    assert len(histograms) == 2 * len(CONV_NAMES)
    for h in histograms:
        assert len(h.edges) == 41
        for stage in ("initial", "trained"):
            assert h.stages[stage].counts.sum() == np.prod(h.shape)
    kernel = next(h for h in histograms if h.layer == "conv5" and h.parameter == "kernel")
    assert kernel.relative_change is not None and kernel.relative_change > 0.1


def test_initial_histogram_matches_the_stored_initial_weights(committed_model, committed_store):
    """Read initial.weights.h5 directly with h5py (Keras names the 4th Conv2D conv2d_3 there)."""
    path = committed_store.entry_dir(committed_model.ref) / INITIAL_WEIGHTS_FILE
    with h5py.File(path, "r") as handle:
        stored = handle["layers/conv2d_3/vars/0"][()]
    h, _bias = weight_histograms(weight_set(committed_model), "initial", ["conv4"], bins=30)
    assert stored.shape == h.shape
    np.testing.assert_array_equal(np.histogram(stored, bins=h.edges)[0], h.stages["initial"].counts)
    assert stored.std() == pytest.approx(h.stages["initial"].std, rel=1e-6)
    assert "trained" not in h.stages
