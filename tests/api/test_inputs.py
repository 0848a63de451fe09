"""Every body format reaches the model as the same 32x32 RGB input."""

import base64
import io

import numpy as np
import pytest
from mindscope.api.codecs import DecodedRequest
from mindscope.api.deps import get_decoded
from mindscope.errors import InvalidInput
from PIL import Image

from .helpers import array_of, assert_error, encode


@pytest.fixture(scope="module")
def picture(sample_jpeg) -> Image.Image:
    return Image.open(io.BytesIO(sample_jpeg)).convert("RGB")


def probabilities(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    body = response.json()
    return array_of(body["probabilities"] if "probabilities" in body else body["predictions"][0]["probabilities"])


def test_multipart_raw_and_json_agree(client, picture):
    png = encode(picture)
    by_multipart = client.post("/predict", files={"file": ("x.png", png, "image/png")})
    by_raw = client.post("/predict", content=png, headers={"Content-Type": "image/png"})
    by_b64 = client.post("/predict", json={"instances": [{"b64": base64.b64encode(png).decode()}]})
    by_array = client.post("/predict", json={"instances": [np.asarray(picture).tolist()]})
    by_unit = client.post("/predict", json={"instances": [(np.asarray(picture) / 255).tolist()], "value_range": "0-1"})
    reference = probabilities(by_multipart)
    for response in (by_raw, by_b64, by_array, by_unit):
        np.testing.assert_allclose(probabilities(response), reference, rtol=1e-5, atol=1e-6)
    assert by_multipart.json()["input"] == {"width": 32, "height": 32, "mode": "RGB", "format": "PNG"}
    assert by_array.json()["predictions"][0]["input"]["format"] == "array"


@pytest.mark.parametrize(
    ("mode", "fmt"), [("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"), ("RGB", "WEBP"), ("RGB", "JPEG")]
)
def test_any_mode_and_size_is_converted_and_reported(client, picture, mode, fmt):
    large = picture.resize((97, 61)).convert(mode)
    response = client.post("/predict", content=encode(large, fmt), headers={"Content-Type": f"image/{fmt.lower()}"})
    assert response.status_code == 200, response.text
    assert response.json()["input"] == {"width": 97, "height": 61, "mode": mode, "format": fmt}
    assert probabilities(response).sum() == pytest.approx(1.0, abs=1e-4)


def test_batch_of_instances(client, validation_sample):
    images, labels, _ = validation_sample
    response = client.post("/predict", json={"instances": [image.tolist() for image in images[:8]]})
    assert response.status_code == 200
    body = response.json()
    assert len(body["predictions"]) == 8 and body["model"]["name"] == "cifar10-allcnn"
    assert {p["class_index"] for p in body["predictions"]} <= set(range(10))
    single = client.post("/predict", json={"instances": [images[0].tolist()]}).json()["predictions"][0]
    np.testing.assert_allclose(
        array_of(single["probabilities"]), array_of(body["predictions"][0]["probabilities"]), rtol=1e-5, atol=1e-7
    )


def test_transparent_pixels_are_composited_on_white(client):
    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    a = client.post("/predict", content=encode(clear), headers={"Content-Type": "image/png"})
    b = client.post("/predict", content=encode(white), headers={"Content-Type": "image/png"})
    np.testing.assert_allclose(probabilities(a), probabilities(b), atol=1e-6)


def test_raw_image_bodies_skip_fastapi_routing_and_answer_the_same(client, sample_jpeg):
    """POST /predict with a raw image is answered in front of FastAPI (api.routes.predict.PredictFastPath);
    with a query it goes through the FastAPI route. Both must give the same answer."""
    jpeg = {"Content-Type": "image/jpeg"}
    fast = client.post("/predict", content=sample_jpeg, headers=jpeg)
    routed = client.post("/predict?format=json", content=sample_jpeg, headers=jpeg)
    assert fast.status_code == routed.status_code == 200
    fast_body, routed_body = fast.json(), routed.json()
    np.testing.assert_allclose(
        array_of(fast_body.pop("probabilities")), array_of(routed_body.pop("probabilities")), rtol=1e-6
    )
    assert fast_body.pop("confidence") == pytest.approx(routed_body.pop("confidence"), rel=1e-6)
    assert fast_body == routed_body

    async def refuse_to_decode() -> DecodedRequest:
        raise InvalidInput("the FastAPI route decoded this body")

    client.app.dependency_overrides[get_decoded] = refuse_to_decode
    try:
        assert client.post("/predict", content=sample_jpeg, headers=jpeg).status_code == 200
        assert_error(client.post("/predict?format=json", content=sample_jpeg, headers=jpeg), 422, "invalid_input")
    finally:
        del client.app.dependency_overrides[get_decoded]
