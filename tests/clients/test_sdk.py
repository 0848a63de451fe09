"""The SDK against a real uvicorn process serving the committed model."""

import asyncio
import io

import httpx
import numpy as np
import pytest
from mindscope_client import (
    Activations,
    AsyncClient,
    Attribution,
    Client,
    ImageResult,
    InvalidImage,
    LayerNotFound,
    ModelNotFound,
    TransportError,
    UnknownClass,
    UnsupportedMediaType,
)
from mindscope_client._exceptions import APIError, BadRequest, NotFound
from PIL import Image

from ..servers import free_port, start_server


@pytest.fixture(scope="module")
def client(server):
    with Client(server.base_url) as sync_client:
        yield sync_client


def test_inputs_of_every_kind_give_the_same_prediction(client, validation_sample):
    images, _, paths = validation_sample
    path = paths[0]
    data = path.read_bytes()
    pil = Image.open(io.BytesIO(data))
    by_path, by_bytes, by_pil = client.predict(path), client.predict(data), client.predict(pil)
    by_array = client.predict(np.asarray(pil.convert("RGB")))
    by_float = client.predict(np.asarray(pil.convert("RGB")) / 255.0)
    for other in (by_bytes, by_pil, by_array, by_float):
        assert other.label == by_path.label
        np.testing.assert_allclose(other.probabilities, by_path.probabilities, atol=2e-3)
    assert by_path.probabilities.shape == (10,) and by_path.model.name == "cifar10-allcnn"
    batch = client.predict([images[0], images[1], path])
    assert [p.class_index for p in batch][2] == by_path.class_index and len(batch) == 3


def test_results_restore_shapes(client, sample_jpeg):
    activations = client.activations(sample_jpeg, "conv6", channels=[1, 2])
    assert isinstance(activations, Activations)
    assert activations.values.shape == (16, 16, 2) and activations.channels == [1, 2]
    histograms = client.weight_histograms(stage="both", layers=["conv2"], bins=16)
    assert histograms[0].edges.shape == (17,) and histograms[0].counts["initial"].sum() == np.prod(histograms[0].shape)
    assert client.weight_histograms(layers=["conv2"], weights="served")[0].source == "served"
    attribution = client.integrated_gradients(sample_jpeg, steps=64, target="cat")
    assert isinstance(attribution, Attribution)
    assert attribution.attributions.shape == (32, 32, 3) and attribution.label == "cat"
    assert attribution.completeness.relative_delta < 0.01
    smoothed = client.integrated_gradients(sample_jpeg, steps=8, target="cat", samples=2, seed=3)
    assert smoothed.smoothing == {"samples": 2, "noise": 0.15, "kind": "mean", "seed": 3}
    assert smoothed.gradient_evaluations == 1 + 2 * (8 + 2) and attribution.smoothing is None
    interior = client.interior_gradients(sample_jpeg, alphas=[0.25, 1.0])
    assert interior.gradients.shape == (2, 32, 32, 3) and interior.score == "probability"
    on_logit = client.integrated_gradients(sample_jpeg, steps=64, target="cat", score="logit")
    assert on_logit.score == "logit" and on_logit.completeness.relative_delta < 0.01
    assert on_logit.completeness.output_at_input != pytest.approx(attribution.completeness.output_at_input)
    assert client.interior_gradients(sample_jpeg, [1.0], "cat", score="logit").outputs[0] == pytest.approx(
        on_logit.completeness.output_at_input, rel=1e-4
    )


def test_pictures_come_back_as_bytes_and_images(client, sample_jpeg, tmp_path):
    for result in (
        client.predict(sample_jpeg, as_png=True),
        client.activations(sample_jpeg, 3, as_png=True),
        client.weight_histograms(as_png=True),
        client.integrated_gradients(sample_jpeg, as_png=True, baseline=sample_jpeg),
        client.interior_gradients(sample_jpeg, as_png=True),
    ):
        assert isinstance(result, ImageResult) and result.data.startswith(b"\x89PNG")
        assert result.image().size[0] > 0
    explained = client.integrated_gradients(sample_jpeg, as_png=True, target="cat", steps=16)
    assert explained.summary["target-label"] == "cat" and explained.summary["steps"] == "16"
    assert float(explained.summary["relative-delta"]) < 0.05
    gif = client.activation_animation(sample_jpeg)
    assert gif.summary == {} and gif.media_type == "image/gif" and gif.image().n_frames == 4
    assert gif.save(tmp_path / "a.gif").stat().st_size == len(gif.data)


def test_errors_map_to_the_exception_tree(client, sample_jpeg):
    with pytest.raises(LayerNotFound) as caught:
        client.activations(sample_jpeg, "conv42")
    assert isinstance(caught.value, NotFound) and caught.value.status_code == 404
    assert caught.value.details["valid_layers"][0] == "conv1"
    with pytest.raises(ModelNotFound):
        client.predict(sample_jpeg, model="nope")
    with pytest.raises(InvalidImage):
        client.predict(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InvalidImage, match="not a decodable image"):
        client.predict(b"neither PNG, JPEG nor WebP")  # sent as octet-stream: the server sniffs it as curl's bytes
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(UnsupportedMediaType, match="GIF"):
        client.predict(gif.getvalue())
    with pytest.raises(UnknownClass) as unknown:
        client.integrated_gradients(sample_jpeg, target="unicorn")
    assert isinstance(unknown.value, BadRequest) and isinstance(unknown.value, APIError)
    with pytest.raises(BadRequest):
        client.integrated_gradients(sample_jpeg, steps=1)


def test_unreachable_service_is_a_transport_error_after_retries():
    with Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01) as dead:
        with pytest.raises(TransportError):
            dead.models()


def test_injected_http_client_is_used(server):
    seen = []
    http = httpx.Client(event_hooks={"request": [seen.append]})
    with Client(server.base_url, http_client=http) as client:
        assert client.models().default.name == "cifar10-allcnn"
    assert seen and not http.is_closed  # the caller keeps ownership
    http.close()


def test_async_client_handles_concurrent_calls(server, validation_sample):
    _, labels, paths = validation_sample

    async def run():
        async with AsyncClient(server.base_url) as client:
            predictions = await asyncio.gather(*(client.predict(path) for path in paths[:24]))
            attribution = await client.integrated_gradients(paths[0], steps=32)
            with pytest.raises(LayerNotFound):
                await client.activations(paths[0], "conv0")
            return predictions, attribution

    predictions, attribution = asyncio.run(run())
    assert len(predictions) == 24
    assert np.mean([p.class_index for p in predictions] == labels[:24]) >= 0.5
    assert attribution.attributions.shape == (32, 32, 3)


def test_retries_ride_out_a_server_that_is_still_starting(tmp_path, committed_store, sample_jpeg):
    """Connection refused, then 503 with Retry-After while loading, then the answer."""
    starting = start_server(tmp_path, committed_store.root)
    try:
        with Client(starting.base_url, retries=200, backoff=0.05) as client:
            assert client.predict(sample_jpeg).label
    finally:
        starting.stop()


def test_every_method_by_name_with_its_parameters_and_scores(client, sample_jpeg):
    from mindscope_client import Explanation

    listed = {m["name"] for m in client.explain_methods()}
    assert {"grad-cam", "occlusion", "guided-ig"} <= listed
    cam = client.explain(sample_jpeg, "grad-cam", "cat", layer="conv6", evaluate=["deletion", "sanity"])
    assert isinstance(cam, Explanation) and cam.attributions.shape == (32, 32, 1)
    assert cam.parameters["layer"] == "conv6" and cam.label == "cat"
    assert cam.evaluation["deletion"]["area"] >= 0 and -1 <= cam.evaluation["sanity"]["rank_correlation"] <= 1
    smooth = client.explain(sample_jpeg, "vanilla-gradients", samples=4, smooth="square", seed=2, noise=0.1)
    assert smooth.gradient_evaluations == 4 and smooth.parameters["smoothing"]["noise"] == 0.1
    assert client.explain(sample_jpeg, "blur-ig", steps=8, sqrt=True, as_png=True).data[:4] == b"\x89PNG"


def test_what_a_channel_looks_for(client):
    (feature,) = client.visualize("conv9", 3, steps=32)
    assert feature.layer == "conv9" and feature.image.shape == (32, 32, 3)
    assert feature.activation > feature.on_noise
    assert [f.channel for f in client.visualize(6, count=2, steps=16)] == [0, 1]
    assert client.visualize("conv6", count=2, steps=16, as_png=True).data[:4] == b"\x89PNG"
