"""What a channel looks for: the picture must excite its channel far more than a real image or noise."""

import numpy as np
import pytest

from .helpers import array_of, assert_error, decode_png


@pytest.mark.parametrize(("layer", "channel"), [("conv3", 2), ("conv6", 3), ("conv9", 3)])
def test_the_picture_activates_its_channel_far_more_than_an_image_or_noise(
    client, committed_model, validation_sample, layer, channel
):
    body = client.get(f"/visualize/{layer}/{channel}").json()
    (feature,) = body["features"]
    image = array_of(feature["image"])
    assert image.shape == (32, 32, 3) and 0 <= image.min() and image.max() <= 1
    # Independently of the service: the channel's mean activation, by a Keras sub-model.
    import keras

    tapped = keras.Model(committed_model.model.input, committed_model.model.get_layer(layer).output)
    real = validation_sample[0][:16].astype(np.float32) / 255

    def mean_activation(images):
        return np.asarray(tapped(images, training=False))[..., channel].mean(axis=(1, 2))

    on_picture = float(mean_activation(image[None])[0])
    assert on_picture == pytest.approx(feature["activation"], rel=1e-3, abs=1e-4)
    on_real = mean_activation(real)
    on_noise = mean_activation(np.random.default_rng(0).uniform(0, 1, (16, 32, 32, 3)).astype(np.float32))
    spread = max(float(on_real.std()), 1e-3)
    print(f"{layer}/{channel}: picture {on_picture:.3f}, real max {on_real.max():.3f}, noise max {on_noise.max():.3f}")
    assert on_picture > on_real.max() + spread and on_picture > on_noise.max() + spread


def test_pictures_are_seeded_cached_and_drawn(client):
    first = client.get("/visualize/conv6/1?steps=32&seed=4").json()["features"][0]
    again = client.get("/visualize/conv6/1?steps=32&seed=4").json()["features"][0]
    other = client.get("/visualize/conv6/1?steps=32&seed=5").json()["features"][0]
    np.testing.assert_array_equal(array_of(first["image"]), array_of(again["image"]))
    assert not np.array_equal(array_of(first["image"]), array_of(other["image"]))
    grid = client.get("/visualize/conv6?count=4&steps=32&format=png")
    assert grid.headers["content-type"] == "image/png" and decode_png(grid.content).size[0] >= 1000
    listing = client.get("/visualize/6?count=3&steps=32").json()
    assert [f["channel"] for f in listing["features"]] == [0, 1, 2] and listing["layer"]["name"] == "conv6"


def test_bad_layers_channels_and_steps_are_clear_errors(client):
    assert_error(client.get("/visualize/conv0/1"), 404, "unknown_layer")
    error = assert_error(client.get("/visualize/conv9/10"), 422, "invalid_input")
    assert "channels 0-9" in error["message"]
    assert (
        "MINDSCOPE_MAX_STEPS"
        in assert_error(client.get("/visualize/conv9/1?steps=100000"), 422, "invalid_input")["message"]
    )


def test_a_grid_ascends_its_channels_together_and_each_picture_is_its_own(committed_model):
    """A grid's channels share one batched ascent; each channel's picture is the one it gets
    alone (the same start and jitters from the seed), to float rounding."""
    from mindscope.engine.visualize import Visualizer

    together = Visualizer(committed_model).visualize_many("conv6", [4, 1, 7], steps=24, seed=5)
    alone = Visualizer(committed_model).visualize("conv6", 1, steps=24, seed=5)
    assert [v.channel for v in together] == [4, 1, 7]
    np.testing.assert_allclose(together[1].image, alone.image, atol=2e-3)
    assert together[1].activation == pytest.approx(alone.activation, rel=1e-2)
    assert not np.allclose(together[0].image, together[2].image)  # each row followed its own channel


def test_the_class_layer_grid_shows_every_class_by_default_and_others_eight(client):
    classes = client.get("/visualize/conv9?steps=8").json()["features"]
    assert [f["channel"] for f in classes] == list(range(10))  # ship and truck included
    assert len(client.get("/visualize/conv3?steps=8").json()["features"]) == 8
    assert len(client.get("/visualize/conv9?steps=8&count=3").json()["features"]) == 3
