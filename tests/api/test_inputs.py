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
    assert by_multipart.json()["input"] == {
        "width": 32,
        "height": 32,
        "mode": "RGB",
        "format": "PNG",
        "exif_orientation": 1,
    }
    assert by_array.json()["predictions"][0]["input"]["format"] == "array"


@pytest.mark.parametrize(
    ("mode", "fmt"), [("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"), ("RGB", "WEBP"), ("RGB", "JPEG")]
)
def test_any_mode_and_size_is_converted_and_reported(client, picture, mode, fmt):
    large = picture.resize((97, 61)).convert(mode)
    response = client.post("/predict", content=encode(large, fmt), headers={"Content-Type": f"image/{fmt.lower()}"})
    assert response.status_code == 200, response.text
    assert response.json()["input"] == {"width": 97, "height": 61, "mode": mode, "format": fmt, "exif_orientation": 1}
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
    """POST /predict with a raw image is answered in front of FastAPI (api.predict_fast_path);
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


def test_exif_orientation_is_applied_and_reported(client, picture):
    """A phone photo stored sideways with Orientation=6 answers as the upright picture does."""
    upright = picture.resize((64, 48))
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # what Orientation=6 turns back upright
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = io.BytesIO()
    sideways.save(tagged, format="PNG", exif=exif)
    reference = client.post("/predict", content=encode(upright), headers={"Content-Type": "image/png"})
    turned = client.post("/predict", content=tagged.getvalue(), headers={"Content-Type": "image/png"})
    np.testing.assert_allclose(probabilities(turned), probabilities(reference), atol=1e-6)
    assert turned.json()["input"] == {"width": 48, "height": 64, "mode": "RGB", "format": "PNG", "exif_orientation": 6}
    # JPEG: the fast decoder has no EXIF, so a tagged JPEG takes Pillow's path and is turned too.
    photo = io.BytesIO()
    sideways.save(photo, format="JPEG", quality=95, exif=exif)
    by_jpeg = client.post("/predict", content=photo.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert by_jpeg.json()["input"]["exif_orientation"] == 6
    np.testing.assert_allclose(probabilities(by_jpeg), probabilities(reference), atol=0.05)


def test_wide_modes_are_scaled_to_eight_bits(client, picture):
    grey = picture.convert("L")
    sixteen = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # mode I;16: 0-65535
    assert sixteen.mode == "I;16"
    by_eight = client.post("/predict", content=encode(grey), headers={"Content-Type": "image/png"})
    by_sixteen = client.post("/predict", content=encode(sixteen), headers={"Content-Type": "image/png"})
    np.testing.assert_allclose(probabilities(by_sixteen), probabilities(by_eight), atol=1e-6)
    assert by_sixteen.json()["input"]["mode"] == "I;16"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.fromarray(np.full((4, 4), 65535 * 3 // 5, np.int32)), 153),  # 32-bit int within 16 bits
        (Image.fromarray(np.full((4, 4), 2**31 - 1, np.int32)), 255),  # the whole int32 range
        (Image.fromarray(np.full((4, 4), 0.6, np.float32)), 153),  # float in 0-1
        (Image.fromarray(np.full((4, 4), 153.0, np.float32)), 153),  # float in 0-255
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),  # CMYK red
        (Image.new("PA", (4, 4), (0, 0)), (255, 255, 255)),  # a fully transparent palette image: white
    ],
    ids=["I-16bit", "I-32bit", "F-unit", "F-255", "CMYK", "PA"],
)
def test_every_mode_pillow_opens_becomes_the_right_rgb(image, expected):
    from mindscope.engine.images import to_rgb_array

    pixels = to_rgb_array(image, (4, 4))
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 4, 3)
    assert (pixels == np.asarray(expected, np.uint8)).all(), pixels[0, 0]


def test_palette_transparency_is_composited_on_white(client):
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.info["transparency"] = 0
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    a = client.post("/predict", content=encode(palette), headers={"Content-Type": "image/png"})
    b = client.post("/predict", content=encode(white), headers={"Content-Type": "image/png"})
    np.testing.assert_allclose(probabilities(a), probabilities(b), atol=1e-6)


def test_arrays_within_0_1_must_say_their_range(client):
    grey = np.full((32, 32, 3), 0.5).tolist()
    error = assert_error(client.post("/predict", json={"instances": [grey]}), 422, "invalid_input")
    assert "value_range" in error["message"] and error["details"]["valid_value_ranges"] == ["0-1", "0-255"]
    as_unit = client.post("/predict", json={"instances": [grey], "value_range": "0-1"})
    as_bytes = client.post("/predict", json={"instances": [np.full((32, 32, 3), 127.5).tolist()]})
    np.testing.assert_allclose(probabilities(as_unit), probabilities(as_bytes), atol=1e-6)
    black = client.post("/predict", json={"instances": [np.zeros((32, 32, 3)).tolist()]})
    assert black.status_code == 200  # all zeros is black in either range


def test_bodies_without_an_image_type_are_sniffed_and_explained_alike(client, sample_jpeg):
    typed = client.post("/predict", content=sample_jpeg, headers={"Content-Type": "image/jpeg"})
    for headers in ({"Content-Type": "application/octet-stream"}, {}):
        sniffed = client.post("/predict", content=sample_jpeg, headers=headers)
        np.testing.assert_allclose(probabilities(sniffed), probabilities(typed), atol=1e-7)
    garbage = b"this is not an image at all"
    messages = {
        assert_error(client.post("/predict", content=garbage, headers=headers), 400, "invalid_image")["message"]
        for headers in ({"Content-Type": "image/png"}, {"Content-Type": "application/octet-stream"}, {})
    }
    assert len(messages) == 1 and "not a decodable image" in messages.pop()


def test_a_post_without_a_body_says_no_image_was_sent(client):
    for headers in ({}, {"Content-Type": "image/png"}, {"Content-Type": "application/octet-stream"}):
        error = assert_error(client.post("/predict", headers=headers), 400, "no_image")
        assert "no image was sent" in error["message"] and "multipart" in error["message"]
    unknown = assert_error(
        client.post("/predict", content=b"a=b", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"
    )
    assert "image/png" in unknown["message"]
