"""Every explanation method over HTTP on the committed model: one answer shape, PNGs, caps."""

import numpy as np
import pytest

from .helpers import array_of, assert_error, decode_png

JPEG = {"Content-Type": "image/jpeg"}
METHODS = {
    "vanilla-gradients": ("", (32, 32, 3), 1, 0),
    "gradient-x-input": ("samples=4", (32, 32, 3), 4, 0),
    "grad-cam": ("", (32, 32, 1), 1, 0),
    "occlusion": ("size=8&stride=4", (32, 32, 1), 0, 7 * 7 + 1),
    "blur-ig": ("steps=16&max_sigma=6", (32, 32, 3), 16, 0),
    "guided-ig": ("steps=16", (32, 32, 3), 16, 0),
}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_answers_the_same_shape(client, sample_jpeg, method):
    query, shape, gradient_rows, forward_rows = METHODS[method]
    body = client.post(f"/explain/{method}?target=cat&{query}", content=sample_jpeg, headers=JPEG).json()
    assert body["method"] == method and body["target"] == {"index": 3, "label": "cat"}
    attributions = array_of(body["attributions"])
    assert attributions.shape == shape and np.isfinite(attributions).all() and np.abs(attributions).max() > 0
    # one forward row finds the probabilities (and the target when none is given)
    assert body["evaluations"] == {"gradient": gradient_rows, "forward": forward_rows + 1}
    assert body["seconds"] > 0 and body["score"] == "probability"
    assert array_of(body["probabilities"]).sum() == pytest.approx(1, abs=1e-4)
    picture = client.post(f"/explain/{method}?{query}&format=png", content=sample_jpeg, headers=JPEG)
    assert picture.headers["content-type"] == "image/png" and decode_png(picture.content).size == (1200, 470)


def test_the_listing_names_every_method_with_its_parameters(client):
    methods = {m["name"]: m for m in client.get("/explain").json()["methods"]}
    assert set(METHODS) | {"integrated-gradients", "interior-gradients"} <= set(methods)
    samples = next(p for p in methods["vanilla-gradients"]["parameters"] if p["name"] == "samples")
    assert samples["schema"]["default"] == 0
    layer = next(p for p in methods["grad-cam"]["parameters"] if p["name"] == "layer")
    assert "spatial output" in layer["description"]


def test_smoothgrad_is_repeatable_and_its_kinds_differ(client, sample_jpeg):
    url = "/explain/vanilla-gradients?samples=8&seed=3"
    first = array_of(client.post(url, content=sample_jpeg, headers=JPEG).json()["attributions"])
    again = array_of(client.post(url, content=sample_jpeg, headers=JPEG).json()["attributions"])
    other = array_of(client.post(url + "1", content=sample_jpeg, headers=JPEG).json()["attributions"])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    var = client.post(url + "&smooth=var", content=sample_jpeg, headers=JPEG).json()
    assert (array_of(var["attributions"]) >= 0).all() and var["parameters"]["smoothing"]["kind"] == "var"


def test_grad_cam_reads_any_layer_and_names_it(client, sample_jpeg):
    default = client.post("/explain/grad-cam", content=sample_jpeg, headers=JPEG).json()
    assert default["parameters"]["layer"] == "conv9"
    earlier = client.post("/explain/grad-cam?layer=6&score=logit", content=sample_jpeg, headers=JPEG).json()
    assert earlier["parameters"]["layer"] == "conv6" and earlier["score"] == "logit"
    assert_error(client.post("/explain/grad-cam?layer=conv0", content=sample_jpeg, headers=JPEG), 404, "unknown_layer")


def test_caps_and_bad_values_are_clear_errors(client, sample_jpeg):
    too_many = assert_error(
        client.post("/explain/vanilla-gradients?samples=100000", content=sample_jpeg, headers=JPEG),
        422,
        "invalid_input",
    )
    assert "MINDSCOPE_MAX_SAMPLES" in too_many["message"]
    rows = assert_error(
        client.post("/explain/blur-ig?samples=64&steps=1000", content=sample_jpeg, headers=JPEG), 422, "invalid_input"
    )
    assert "MINDSCOPE_MAX_ROWS" in rows["message"]
    big = assert_error(
        client.post("/explain/occlusion?size=64", content=sample_jpeg, headers=JPEG), 422, "invalid_input"
    )
    assert "size" in big["message"]
    assert client.post("/explain/guided-ig?fraction=0", content=sample_jpeg, headers=JPEG).status_code == 422
