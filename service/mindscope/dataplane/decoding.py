"""Image bodies -> model input, within limits: every front end (the REST routes, V1, V2 REST, gRPC)
decodes through here.

Accepted images: PNG, JPEG and WebP bytes (`decode_raw_body`, `decode_image_bytes`), and JSON
`{"instances": [...], "value_range": "0-255" | "0-1", "baseline": instance?}` (`decode_json_body`),
an instance being an array of the model's input shape or `{"b64": "<base64 PNG/JPEG/WebP>"}`; an
array whose values all lie within 0-1 is ambiguous without `value_range` and is refused. Every
picture is turned upright by its EXIF orientation, wide modes (16-bit, float) are scaled to 8
bits (`engine.images`), and the result has the model's input shape.

What bounds decoding travels as one `DecodeLimits` (the way httpx passes `Limits`): the model's
input shape, the most pixels an image may have, the images one request may carry, and the memory
budget shared by every request in flight (`DecodeBudget`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from mindscope.dataplane.budget import UNBOUNDED_DECODE, DecodeBudget
from mindscope.engine.images import fit_channels, scale_to_unit, to_model_array, upright
from mindscope.errors import (
    InvalidImage,
    InvalidInput,
    InvalidJSON,
    NoImage,
    PayloadTooLarge,
    UnsupportedMediaType,
)


class ImageInfo(BaseModel):
    """What the service received, before conversion to the model's 32x32 RGB input."""

    width: int
    height: int
    mode: str = Field(examples=["RGB", "RGBA", "L", "P", "array"])
    format: str = Field(examples=["PNG", "JPEG", "WEBP", "array"])
    exif_orientation: int = Field(
        1, ge=1, le=8, description="EXIF Orientation found; anything but 1 was applied (the image turned upright)"
    )


Shape = tuple[int, int, int]  # the model's input: (height, width, channels)


@dataclass(frozen=True)
class DecodeLimits:
    """What bounds one request's decoding: the model's input `shape` (height, width, channels), the
    most pixels one image may have, how many images one request may carry, and the decode-memory
    budget shared by every request in flight."""

    shape: Shape
    max_pixels: int
    max_instances: int = 1
    budget: DecodeBudget = UNBOUNDED_DECODE


IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
DECODABLE_FORMATS = ("PNG", "JPEG", "WEBP")
# Raw bodies whose type the bytes themselves tell (curl --data-binary without -H, SDKs that don't know).
SNIFFED_TYPES = ("application/octet-stream", "")
ACCEPTED_TYPES = ["multipart/form-data", *IMAGE_TYPES, "application/octet-stream", "application/json"]
HOW_TO_SEND = (
    "send the image bytes (Content-Type image/png, image/jpeg or image/webp), a multipart field 'file', "
    'or JSON {"instances": [...]}'
)


@dataclass(frozen=True)
class DecodedImage:
    """pixels: float32 (H, W, C) in [0, 1], the model's input shape; info: what was received."""

    pixels: np.ndarray
    info: ImageInfo


@dataclass(frozen=True)
class DecodedRequest:
    images: list[DecodedImage]
    baseline: DecodedImage | None
    batch: bool  # True for JSON `instances`, which answer in batch form

    def single(self) -> DecodedImage:
        if len(self.images) != 1:
            raise InvalidInput(f"this endpoint explains one image; got {len(self.images)}", count=len(self.images))
        return self.images[0]


class B64Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    b64: str


Instance = B64Instance | list[Any]


class InstancesRequest(BaseModel):
    """JSON body: TF Serving's `instances`, plus the value range of raw arrays."""

    model_config = ConfigDict(extra="forbid")
    instances: Annotated[list[Instance], Field(min_length=1)]
    value_range: Literal["0-255", "0-1"] | None = Field(
        None, description="range of raw array instances; required when every value lies within 0-1"
    )
    baseline: Instance | None = Field(None, description="baseline image for ?baseline=upload")


# Images up to this many pixels decode in well under a millisecond: cheaper on the event loop than
# the hop to a worker thread. Larger ones (up to max_image_pixels) decode in the thread pool.
INLINE_DECODE_PIXELS = 256 * 256


# Large JPEGs decode reduced (libjpeg's DCT scaling through Pillow's draft mode: 1/2, 1/4 or 1/8
# per side) to no less than this many times the input size, so a 4096x4096 photo decodes at
# 512x512; the antialiased resize to the input still averages several decoded pixels per input pixel.
JPEG_DRAFT_FACTOR = 4

# Peak bytes per pixel while one image is decoded and converted (`to_rgb_array`): Pillow holds RGB
# in 4 bytes a pixel; a mode that converts adds an RGB copy; alpha adds the composite's buffers;
# 16-bit and float greyscale pass through float64 arrays on their way to 8 bits.
_PEAK_BYTES_PER_PIXEL = {"RGB": 4, "1": 5, "L": 5, "CMYK": 8, "YCbCr": 8, "I": 36, "F": 36}
_WIDE_BYTES_PER_PIXEL = 32
_OTHER_BYTES_PER_PIXEL = 18  # alpha modes, palettes (with transparency: RGBA, white, composite, RGB)


def decode_bytes(size: tuple[int, int], mode: str) -> int:
    """Estimated peak memory of decoding an image of `size` in `mode` into model input."""
    if mode.startswith("I;16"):
        per_pixel = _WIDE_BYTES_PER_PIXEL
    else:
        per_pixel = _PEAK_BYTES_PER_PIXEL.get(mode, _OTHER_BYTES_PER_PIXEL)
    return size[0] * size[1] * per_pixel


def _jpeg_draft_size(shape: Shape) -> tuple[int, int]:
    return shape[1] * JPEG_DRAFT_FACTOR, shape[0] * JPEG_DRAFT_FACTOR


def _drafts(width: int, height: int, shape: Shape) -> bool:
    """Whether Pillow's draft mode decodes a JPEG of this size reduced (it halves at least once)."""
    draft_width, draft_height = _jpeg_draft_size(shape)
    return min(width // draft_width, height // draft_height) >= 2


# JPEG colour spaces whose libjpeg-turbo RGB output through simplejpeg is Pillow's, pixel for pixel
# (tests/api/test_codec_fuzz.py), with the mode Pillow reports for them.
_JPEG_MODES = {"YCbCr": "RGB", "Gray": "L"}


def decode_image_bytes(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """PNG/JPEG/WebP bytes -> input of `limits.shape`; other formats -> 415, garbage -> 400, huge ->
    413. Blocks while a large image waits for decode memory: call it off the event loop."""
    return decode_jpeg(data, min(limits.max_pixels, INLINE_DECODE_PIXELS), limits.shape) or finish_decode(
        open_image(data, limits.max_pixels), limits
    )


def decode_jpeg(data: bytes, max_pixels: int, shape: Shape) -> DecodedImage | None:
    """A YCbCr or grayscale JPEG of at most `max_pixels`, too small for draft mode to reduce, decoded
    by simplejpeg; None for anything else.

    The same pixels as Pillow's decoder (both are libjpeg-turbo with its accurate DCT and smooth
    upsampling) at a tenth of the CPU for a CIFAR-sized image: Pillow reads JPEG markers in Python.
    Whatever simplejpeg refuses (other colour spaces, damaged data) is left to Pillow, whose
    verdict, picture or error, stays the service's.
    """
    if not data.startswith(b"\xff\xd8") or data.find(b"Exif\x00\x00", 2, 1 << 16) != -1:
        return None  # not a JPEG, or one with EXIF (an orientation to apply): Pillow's path
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in _JPEG_MODES or width * height > max_pixels or _drafts(width, height, shape):
            return None
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None
    if (height, width) != shape[:2]:
        rgb = to_model_array(Image.fromarray(rgb), shape)
    else:
        rgb = fit_channels(rgb, shape[2])
    info = ImageInfo(width=width, height=height, mode=_JPEG_MODES[colorspace], format="JPEG")
    return DecodedImage(scale_to_unit(rgb), info)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only (cheap): the format and size are checked, the pixels not yet decoded."""
    if not data:
        raise NoImage(f"no image was sent: {HOW_TO_SEND}", accepted=ACCEPTED_TYPES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)
    except UnidentifiedImageError:
        raise _unsupported_or_invalid(data) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PayloadTooLarge(f"the image has too many pixels ({exc})", max_pixels=max_pixels) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"the image header could not be read: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise PayloadTooLarge(
            f"the image is {width}x{height} pixels; at most {max_pixels} pixels are accepted",
            width=width,
            height=height,
            max_pixels=max_pixels,
        )
    return image


def finish_decode(image: Image.Image, limits: DecodeLimits) -> DecodedImage:
    """Decode the pixels of an `open_image` result into input of `limits.shape`, once the budget has
    room for them (blocking: call it off the event loop unless the image is small)."""
    planned = plan_decode(image, limits.shape)
    with limits.budget.reserve(planned.needed_bytes) if planned.needed_bytes else contextlib.nullcontext():
        return planned.decode()


@dataclass(frozen=True)
class PlannedDecode:
    """An opened image about to be decoded: a large JPEG already set to decode reduced (draft
    mode), and the decode memory it will take from the budget (0 for a small image)."""

    image: Image.Image
    width: int
    height: int
    mode: str
    needed_bytes: int
    shape: Shape

    def decode(self) -> DecodedImage:
        image, image_format = self.image, self.image.format or "unknown"
        with image:
            try:
                turned, orientation = upright(image)
                pixels = to_model_array(turned, self.shape)
            except (OSError, ValueError, SyntaxError) as exc:
                raise InvalidImage(f"the {image_format} image could not be decoded: {exc}") from None
        info = ImageInfo(
            width=self.width, height=self.height, mode=self.mode, format=image_format, exif_orientation=orientation
        )
        return DecodedImage(scale_to_unit(pixels), info)


def plan_decode(image: Image.Image, shape: Shape) -> PlannedDecode:
    width, height = image.size
    mode = image.mode
    if image.format == "JPEG" and _drafts(width, height, shape):
        image.draft(mode, _jpeg_draft_size(shape))
    in_memory = image.size[0] * image.size[1]
    needed = decode_bytes(image.size, mode) if in_memory > INLINE_DECODE_PIXELS else 0
    return PlannedDecode(image, width, height, mode, needed, shape)


def _unsupported_or_invalid(data: bytes) -> Exception:
    try:
        with Image.open(io.BytesIO(data)) as other:
            found = other.format
    except Exception:
        return InvalidImage(
            "the body is not a decodable image; send PNG, JPEG or WebP bytes", accepted=list(DECODABLE_FORMATS)
        )
    return UnsupportedMediaType(
        f"{found} images are not accepted; send PNG, JPEG or WebP", found=found, accepted=list(DECODABLE_FORMATS)
    )


def decode_array(instance: list[Any], value_range: str | None, shape: Shape) -> DecodedImage:
    """A nested list of the model's input `shape` (H, W, C; (H, W) too for one channel) in
    `value_range`; None means 0-255 unless every value lies within 0-1, which is ambiguous (an
    all-0.5 grey would become near-black) and refused with 422."""
    expected = list(shape)
    try:
        array = np.asarray(instance, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidInput(f"an array instance must be a rectangular {expected} array of numbers") from None
    if shape[2] == 1 and array.shape == shape[:2]:
        array = array[..., None]
    if array.shape != shape:
        raise InvalidInput(
            f"an array instance must have this model's input shape {expected}; got {list(array.shape)}",
            expected_shape=expected,
            shape=list(array.shape),
        )
    if value_range is None and np.isfinite(array).all() and 0 <= array.min() and array.max() <= 1 and array.any():
        raise InvalidInput(
            'every value of the array lies within 0-1: say which range it is in with "value_range": "0-1" '
            '(floats from 0 to 1) or "0-255" (8-bit pixel values)',
            valid_value_ranges=["0-1", "0-255"],
        )
    value_range = value_range or "0-255"
    top = 255.0 if value_range == "0-255" else 1.0
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > top:
        raise InvalidInput(
            f"array values must be finite and within {value_range}; set value_range to match your data",
            value_range=value_range,
        )
    pixels = (array / top).astype(np.float32)
    return DecodedImage(pixels, ImageInfo(width=shape[1], height=shape[0], mode="array", format="array"))


def decode_instance(instance: Instance, value_range: str | None, limits: DecodeLimits) -> DecodedImage:
    """One JSON instance (base64 bytes or a nested array), as /predict and jobs take them."""
    if isinstance(instance, B64Instance):
        try:
            data = base64.b64decode(instance.b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidImage("the b64 field is not valid base64") from None
        return decode_image_bytes(data, limits)
    return decode_array(instance, value_range, limits.shape)


def decode_json_body(data: bytes, limits: DecodeLimits) -> DecodedRequest:
    """A JSON `instances` body -> decoded images (CPU work: call it off the event loop)."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON(f"the body is not valid JSON: {str(exc)[:200]}") from None
    try:
        body = InstancesRequest.model_validate(parsed)
    except ValidationError as exc:
        raise InvalidInput(
            'the JSON body must be {"instances": [...]}',
            errors=json.loads(exc.json(include_url=False, include_context=False)),
        ) from None
    if len(body.instances) > limits.max_instances:
        raise PayloadTooLarge(
            f"{len(body.instances)} instances; at most {limits.max_instances} per request",
            max_instances=limits.max_instances,
        )
    images = [decode_instance(i, body.value_range, limits) for i in body.instances]
    baseline = None if body.baseline is None else decode_instance(body.baseline, body.value_range, limits)
    return DecodedRequest(images, baseline, batch=True)


def decode_upload(image: bytes, baseline: bytes | None, limits: DecodeLimits) -> DecodedRequest:
    """A multipart upload's image and optional baseline (blocking: call it off the event loop)."""
    decoded_baseline = None if baseline is None else decode_image_bytes(baseline, limits)
    return DecodedRequest([decode_image_bytes(image, limits)], decoded_baseline, batch=False)


async def decode_raw_body(data: bytes, limits: DecodeLimits) -> DecodedRequest:
    """A raw image body: small images decode here on the event loop; large ones wait here (not
    holding a worker thread) for room in the decode `budget`, then decode in the thread pool."""
    decoded = decode_jpeg(data, min(limits.max_pixels, INLINE_DECODE_PIXELS), limits.shape)
    if decoded is None:
        image = open_image(data, limits.max_pixels)
        width, height = image.size
        planned = plan_decode(image, limits.shape)
        if width * height <= INLINE_DECODE_PIXELS:
            decoded = planned.decode()
        else:
            async with limits.budget.reserve_async(planned.needed_bytes):
                decoded = await run_in_threadpool(planned.decode)
    return DecodedRequest([decoded], None, batch=False)
