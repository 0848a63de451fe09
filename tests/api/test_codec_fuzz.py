"""Property tests of the image decoding path: any bytes give an image or a clear domain error, and
the fast JPEG decoder gives Pillow's pixels."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mindscope.dataplane.decoding import (
    DecodeLimits,
    decode_array,
    decode_image_bytes,
    decode_jpeg,
    finish_decode,
    open_image,
)
from mindscope.engine.images import scale_to_unit
from mindscope.errors import (
    InvalidImage,
    InvalidInput,
    MindscopeError,
    NoImage,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from PIL import Image

MAX_PIXELS = 512 * 512
SHAPE = (32, 32, 3)  # the committed model's input
LIMITS = DecodeLimits(SHAPE, MAX_PIXELS)
PNG_HEAD = b"\x89PNG\r\n\x1a\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.binary(max_size=512).map(lambda tail: PNG_HEAD + tail))
def test_arbitrary_bytes_never_escape_as_unexpected_errors(data):
    try:
        decoded = decode_image_bytes(data, LIMITS)
    except MindscopeError as error:
        assert isinstance(error, InvalidImage | UnsupportedMediaType | PayloadTooLarge | NoImage)
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
        decoded = decode_image_bytes(data, LIMITS)
    except InvalidImage:
        assert cut is not None  # only a truncated file may fail
        return
    assert decoded.pixels.shape == (32, 32, 3) and decoded.pixels.dtype == np.float32
    assert 0.0 <= decoded.pixels.min() and decoded.pixels.max() <= 1.0
    assert (decoded.info.width, decoded.info.height, decoded.info.format) == (*size, fmt)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["RGB", "L"]),
    st.integers(1, 120),
    st.integers(1, 120),
    st.integers(5, 100),
    st.sampled_from([0, 1, 2]),  # 4:4:4, 4:2:2, 4:2:0
    st.booleans(),
    st.integers(0, 2**16),
)
def test_jpeg_fast_path_gives_pillows_pixels(mode, width, height, quality, subsampling, progressive, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(
        buffer, format="JPEG", quality=quality, subsampling=subsampling, progressive=progressive
    )
    data = buffer.getvalue()
    fast = decode_jpeg(data, MAX_PIXELS, SHAPE)
    assert fast is not None
    by_pillow = finish_decode(open_image(data, MAX_PIXELS), LIMITS)
    assert np.array_equal(fast.pixels, by_pillow.pixels)
    assert fast.info == by_pillow.info


def test_training_and_serving_decode_cifar_jpegs_to_the_same_pixels(validation_sample):
    images, _, paths = validation_sample  # decoded as training decodes its data
    for image, path in zip(images, paths, strict=True):
        assert np.array_equal(decode_image_bytes(path.read_bytes(), LIMITS).pixels, scale_to_unit(image))


def test_jpegs_the_fast_path_leaves_alone_still_decode():
    cmyk = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 255, 0, 0)).save(cmyk, format="JPEG")
    assert decode_jpeg(cmyk.getvalue(), MAX_PIXELS, SHAPE) is None
    decoded = decode_image_bytes(cmyk.getvalue(), LIMITS)
    assert decoded.info.mode == "CMYK" and decoded.pixels.shape == (32, 32, 3)
    large = io.BytesIO()
    Image.new("RGB", (600, 600)).save(large, format="JPEG")
    assert decode_jpeg(large.getvalue(), MAX_PIXELS, SHAPE) is None  # over the cap: Pillow's 413 answers it
    with pytest.raises(PayloadTooLarge) as refused:
        decode_image_bytes(large.getvalue(), LIMITS)
    assert refused.value.details["max_pixels"] == MAX_PIXELS


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
        decode_array(value, "0-255", SHAPE)
    except InvalidInput:
        return
    raise AssertionError("only a finite (32, 32, 3) array in range decodes")
