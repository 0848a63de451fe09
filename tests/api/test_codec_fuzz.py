"""Property tests of the image decoding path: any bytes give an image or a clear domain error."""

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mindscope.api.codecs import decode_array, decode_image_bytes
from mindscope.errors import InvalidImage, InvalidInput, MindscopeError, PayloadTooLarge, UnsupportedMediaType
from PIL import Image

MAX_PIXELS = 512 * 512
PNG_HEAD = b"\x89PNG\r\n\x1a\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.binary(max_size=512).map(lambda tail: PNG_HEAD + tail))
def test_arbitrary_bytes_never_escape_as_unexpected_errors(data):
    try:
        decoded = decode_image_bytes(data, MAX_PIXELS)
    except MindscopeError as error:
        assert isinstance(error, InvalidImage | UnsupportedMediaType | PayloadTooLarge)
    else:
        assert decoded.pixels.shape == (32, 32, 3)


@st.composite
def encoded_images(draw):
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I;16"]))
    fmt = draw(st.sampled_from(["PNG", "WEBP", "JPEG"]))
    if fmt == "JPEG" and mode not in ("RGB", "L"):
        mode = "RGB"
    if fmt == "WEBP" and mode not in ("RGB", "RGBA"):
        mode = "RGBA"
    width, height = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue(), (width, height), fmt, data_truncation(draw)


def data_truncation(draw):
    return draw(st.one_of(st.none(), st.floats(0.05, 0.95)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoded_images())
def test_every_mode_and_size_decodes_to_the_model_input(case):
    data, size, fmt, cut = case
    if cut is not None:
        data = data[: max(1, int(len(data) * cut))]
    try:
        decoded = decode_image_bytes(data, MAX_PIXELS)
    except InvalidImage:
        assert cut is not None  # only a truncated file may fail
        return
    assert decoded.pixels.shape == (32, 32, 3) and decoded.pixels.dtype == np.float32
    assert 0.0 <= decoded.pixels.min() and decoded.pixels.max() <= 1.0
    assert (decoded.info.width, decoded.info.height, decoded.info.format) == (*size, fmt)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=3),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=40,
    )
)
def test_arbitrary_json_arrays_are_input_errors(value):
    try:
        decode_array(value, "0-255")
    except InvalidInput:
        return
    raise AssertionError("only a finite (32, 32, 3) array in range decodes")
