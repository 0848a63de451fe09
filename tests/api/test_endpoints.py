"""Each endpoint's JSON and PNG answers on the committed model."""

import numpy as np
import pytest

from .helpers import array_of, decode_png

JPEG = {"Content-Type": "image/jpeg"}


def test_predict_json_names_the_class_and_model(client, sample_jpeg, committed_store):
    body = client.post("/predict", content=sample_jpeg, headers=JPEG).json()
    probabilities = array_of(body["probabilities"])
    assert probabilities.shape == (10,) and probabilities.sum() == pytest.approx(1, abs=1e-4)
    assert body["class_index"] == int(probabilities.argmax()) and body["label"] == body["classes"][body["class_index"]]
    assert body["confidence"] == pytest.approx(float(probabilities.max()))
    assert body["model"] == {"name": "cifar10-allcnn", "version": committed_store.resolve().version}


def test_predict_png_is_a_bar_chart(client, sample_jpeg):
    for response in (
        client.post("/predict?format=png", content=sample_jpeg, headers=JPEG),
        client.post("/predict", content=sample_jpeg, headers={**JPEG, "Accept": "image/png"}),
    ):
        assert response.headers["content-type"] == "image/png"
        assert decode_png(response.content).size == (640, 420)


def test_activations_json_and_grid(client, sample_jpeg):
    body = client.post("/activations/conv6?channels=0&channels=5", content=sample_jpeg, headers=JPEG).json()
    assert body["layer"] == {"index": 6, "name": "conv6", "output_shape": [16, 16, 64]}
    assert body["channels"] == [0, 5]
    values = array_of(body["activations"])
    assert values.shape == (16, 16, 2)
    np.testing.assert_allclose(array_of(body["statistics"]["max"]), values.max(axis=(0, 1)), rtol=1e-6)
    default = client.post("/activations/3", content=sample_jpeg, headers=JPEG).json()
    assert default["channels"] == list(range(27))
    grid = decode_png(client.post("/activations/3?format=png", content=sample_jpeg, headers=JPEG).content)
    few = decode_png(client.post("/activations/3?format=png&channels=4", content=sample_jpeg, headers=JPEG).content)
    assert grid.size[0] == few.size[0] == 1300 and grid.size[1] >= few.size[1]


def test_animation_is_a_gif_from_input_through_layers_3_6_9(client, sample_jpeg):
    response = client.post("/activations/animation", content=sample_jpeg, headers=JPEG)
    assert response.headers["content-type"] == "image/gif"
    gif = decode_png(response.content)
    assert gif.n_frames == 4 and gif.size[0] == 1300
    frames = []
    for index in range(gif.n_frames):
        gif.seek(index)
        frames.append(np.asarray(gif.convert("RGB")))
    assert all(frame.shape == frames[0].shape for frame in frames)
    assert len({frame.tobytes() for frame in frames}) == 4  # the input, then three different layers


def test_weight_histograms(client):
    body = client.get("/weights/histogram", params={"layers": "conv1,9", "bins": 20}).json()
    assert [(h["layer"], h["parameter"]) for h in body["histograms"]] == [
        ("conv1", "kernel"), ("conv1", "bias"), ("conv9", "kernel"), ("conv9", "bias"),
    ]  # fmt: skip
    kernel = body["histograms"][0]
    assert array_of(kernel["edges"]).shape == (21,)
    assert array_of(kernel["stages"]["initial"]["counts"]).sum() == np.prod(kernel["shape"]) == 3 * 3 * 3 * 32
    assert kernel["relative_change"] > 0
    assert body["histograms"][1]["relative_change"] is None  # biases start at zero
    trained = client.get("/weights/histogram?stage=trained&layers=conv1&bins=20").json()["histograms"][0]
    assert list(trained["stages"]) == ["trained"] and trained["edges"] == kernel["edges"]
    assert body["weights"] and "BatchNorm" in body["weights"]  # says which weights these are
    figure = decode_png(client.get("/weights/histogram?format=png").content)
    one_layer = decode_png(client.get("/weights/histogram?format=png&layers=conv9").content)
    assert figure.size[0] == one_layer.size[0] == 1400 and figure.size[1] > 4 * one_layer.size[1]


def test_integrated_gradients_json(client, sample_jpeg):
    response = client.post("/explain/integrated-gradients?steps=64", content=sample_jpeg, headers=JPEG)
    body = response.json()
    attributions = array_of(body["attributions"])
    assert attributions.shape == (32, 32, 3)
    completeness = body["completeness"]
    assert completeness["attribution_sum"] == pytest.approx(float(attributions.sum(dtype=np.float64)), rel=1e-4)
    assert completeness["relative_delta"] < 0.01
    # the ends and the path; the predicted class comes from the forward lane, not a gradient row
    assert body["steps"] == 64 and body["gradient_evaluations"] == 2 + 64
    assert body["target"]["index"] == int(array_of(body["probabilities"]).argmax())


def independent_baseline(kind: str, image: np.ndarray) -> np.ndarray:
    """The baseline each name promises, computed here: white ones, scipy's Gaussian blur (sigma 3,
    mirrored edges, 3 sigma), and uniform noise from numpy's generator seeded 0."""
    from scipy import ndimage

    if kind == "white":
        return np.ones_like(image)
    if kind == "blur":
        return ndimage.gaussian_filter(image.astype(np.float64), sigma=(3, 3, 0), mode="mirror", truncate=3.0)
    return np.random.default_rng(0).uniform(0.0, 1.0, image.shape)


@pytest.mark.parametrize("baseline", ["white", "blur", "uniform-noise"])
def test_integrated_gradients_baselines_and_named_target(client, sample_jpeg, committed_model, baseline):
    import io

    from PIL import Image

    query = f"/explain/integrated-gradients?steps=32&baseline={baseline}&target=cat&method=riemann_trapezoid"
    body = client.post(query, content=sample_jpeg, headers=JPEG).json()
    assert body["target"] == {"index": 3, "label": "cat"} and body["baseline"] == baseline
    assert body["method"] == "riemann_trapezoid"
    # The baseline really used: F(baseline) is what Keras gives on the baseline computed here.
    image = np.asarray(Image.open(io.BytesIO(sample_jpeg)).convert("RGB"), np.float32) / 255
    reference = independent_baseline(baseline, image).astype(np.float32)
    expected = float(np.asarray(committed_model.model(reference[None], training=False))[0, 3])
    assert body["completeness"]["output_at_baseline"] == pytest.approx(expected, abs=1e-5)
    assert body["completeness"]["output_at_input"] != pytest.approx(expected, abs=1e-3)


def test_integrated_gradients_with_an_uploaded_baseline(client, sample_jpeg):
    files = {"file": ("x.jpg", sample_jpeg, "image/jpeg"), "baseline": ("b.jpg", sample_jpeg, "image/jpeg")}
    body = client.post("/explain/integrated-gradients?baseline=upload&steps=8", files=files).json()
    assert body["completeness"]["output_at_input"] == pytest.approx(body["completeness"]["output_at_baseline"])
    assert np.abs(array_of(body["attributions"])).max() == 0


def test_tolerance_mode_reports_the_steps_it_needed(client, sample_jpeg):
    body = client.post(
        "/explain/integrated-gradients?steps=4&tolerance=0.001", content=sample_jpeg, headers=JPEG
    ).json()
    assert body["tolerance"]["met"] == (body["completeness"]["relative_delta"] <= 0.001)
    assert body["tolerance"]["met"] or body["steps"] * 2 > body["tolerance"]["max_steps"]
    assert body["gradient_evaluations"] > body["steps"]


def test_a_tolerance_not_met_says_so(client, sample_jpeg):
    query = "/explain/integrated-gradients?steps=8&tolerance=1e-12&method=riemann_trapezoid"
    body = client.post(query, content=sample_jpeg, headers=JPEG).json()
    assert body["steps"] == 1024 == body["tolerance"]["max_steps"]  # refined up to the cap
    assert body["tolerance"] == {
        "requested": 1e-12,
        "met": False,
        "relative_delta": body["completeness"]["relative_delta"],
        "max_steps": 1024,
    }
    headers = client.post(query + "&format=png", content=sample_jpeg, headers=JPEG).headers
    assert headers["x-ig-tolerance-met"] == "false"
    plain = client.post("/explain/integrated-gradients?steps=8", content=sample_jpeg, headers=JPEG)
    assert plain.json()["tolerance"] is None and "x-ig-tolerance-met" not in plain.headers


def test_integrated_gradients_png(client, sample_jpeg):
    for sign in ("all", "positive", "absolute"):
        url = f"/explain/integrated-gradients?format=png&sign={sign}&clip_percentile=95"
        response = client.post(url, content=sample_jpeg, headers=JPEG)
        assert decode_png(response.content).size == (1200, 470)
    # The PNG carries the JSON answer's summary in headers, so a picture needs one call, not two.
    query = "/explain/integrated-gradients?steps=16&target=cat"
    body = client.post(query, content=sample_jpeg, headers=JPEG).json()
    headers = client.post(f"{query}&format=png", content=sample_jpeg, headers=JPEG).headers
    assert headers["x-ig-target"] == str(body["target"]["index"]) and headers["x-ig-target-label"] == "cat"
    assert int(headers["x-ig-steps"]) == body["steps"] == 16
    assert int(headers["x-ig-gradient-evaluations"]) == body["gradient_evaluations"]
    completeness = body["completeness"]
    for name in ("attribution_sum", "output_at_input", "output_at_baseline", "relative_delta"):
        assert float(headers[f"x-ig-{name.replace('_', '-')}"]) == pytest.approx(completeness[name], rel=1e-5, abs=1e-9)


def test_interior_gradients(client, sample_jpeg):
    body = client.post(
        "/explain/interior-gradients?alphas=0.1&alphas=0.5&alphas=1", content=sample_jpeg, headers=JPEG
    ).json()
    assert array_of(body["gradients"]).shape == (3, 32, 32, 3)
    assert array_of(body["alphas"]).tolist() == pytest.approx([0.1, 0.5, 1.0])
    assert array_of(body["outputs"]).shape == (3,)
    strip = client.post("/explain/interior-gradients?format=png", content=sample_jpeg, headers=JPEG)
    three = client.post(
        "/explain/interior-gradients?format=png&alphas=0.1&alphas=0.5", content=sample_jpeg, headers=JPEG
    )
    assert decode_png(strip.content).size[0] > decode_png(three.content).size[0]  # the input, then one panel per alpha


def test_models_and_health(client, committed_store):
    default = {"name": "cifar10-allcnn", "version": committed_store.resolve().version}
    listing = client.get("/models").json()
    assert listing["default"] == default
    detail = client.get("/models/cifar10-allcnn").json()
    assert [layer["name"] for layer in detail["layers"]][-1] == "conv9"
    assert detail["layers"][2]["output_shape"] == [32, 32, 32]
    assert detail["validation_accuracy"] == detail["metadata"]["validation_accuracy"]
    live, ready = client.get("/health/live").json(), client.get("/health/ready").json()
    assert default in ready["models"] and live == ready  # one truth: what is held in memory


def test_openapi_describes_binary_bodies_and_errors(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/png", "image/jpeg", "image/webp", "application/json"} <= set(
        predict["requestBody"]["content"]
    )
    assert {"400", "404", "413", "415", "422"} <= set(predict["responses"])
    assert client.get("/docs").status_code == 200


def test_request_ids_and_metrics(client, sample_jpeg, committed_store):
    echoed = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    fresh = client.get("/health/live", headers={"X-Request-ID": "bad id\n"})
    assert len(fresh.headers["x-request-id"]) == 32
    client.post("/predict", content=sample_jpeg, headers=JPEG)
    client.post("/activations/conv0", content=sample_jpeg, headers=JPEG)
    text = client.get("/metrics").text
    assert 'mindscope_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'route="/activations/{layer}",status="404"' in text
    assert f'mindscope_batches_total{{kind="forward",model="{committed_store.resolve().label}"}}' in text
    assert "mindscope_queue_depth" in text and "mindscope_request_duration_seconds_bucket" in text


def test_attributions_of_the_logit(client, sample_jpeg):
    on_probability = client.post("/explain/integrated-gradients?steps=64", content=sample_jpeg, headers=JPEG).json()
    on_logit = client.post("/explain/integrated-gradients?steps=64&score=logit", content=sample_jpeg, headers=JPEG)
    body = on_logit.json()
    assert body["score"] == "logit" and on_probability["score"] == "probability"
    assert body["completeness"]["relative_delta"] < 0.01
    # A logit is not a probability: the ends of the path differ, the probabilities answered do not.
    assert body["completeness"]["output_at_input"] != pytest.approx(on_probability["completeness"]["output_at_input"])
    np.testing.assert_allclose(array_of(body["probabilities"]), array_of(on_probability["probabilities"]), atol=1e-5)
    interior = client.post("/explain/interior-gradients?alphas=1&score=logit", content=sample_jpeg, headers=JPEG)
    assert interior.json()["score"] == "logit"
    assert array_of(interior.json()["outputs"])[0] == pytest.approx(body["completeness"]["output_at_input"], rel=1e-4)
    bad = client.post("/explain/integrated-gradients?score=log-odds", content=sample_jpeg, headers=JPEG)
    assert bad.status_code == 422
    assert client.get("/models/cifar10-allcnn").json()["scores"] == ["probability", "logit"]
