"""Request bodies -> model-ready images, and response negotiation. Every route uses these.

Accepted bodies (one image unless noted):
- multipart/form-data with the image in field `file` (and optionally a baseline image in `baseline`);
- a raw body with Content-Type image/png, image/jpeg or image/webp, or with
  application/octet-stream or no Content-Type at all: the bytes say what they are;
- application/json `{"instances": [...], "value_range": "0-255" | "0-1", "baseline": instance?}`,
  an instance being an array of the model's input shape (e.g. (32, 32, 3)) or `{"b64": "<base64
  PNG/JPEG/WebP>"}`; may hold a batch.
  An array whose values all lie within 0-1 is ambiguous without `value_range` and is refused.

Every decoded picture is turned upright by its EXIF orientation, and wide modes (16-bit, float)
are scaled to 8 bits (`engine.images`).
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
from fastapi import Request
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.requests import ClientDisconnect

from mindscope.api.limits import UNBOUNDED_DECODE, DecodeBudget
from mindscope.api.schemas import ImageInfo
from mindscope.engine.images import CIFAR_INPUT_SHAPE, fit_channels, scale_to_unit, to_model_array, upright
from mindscope.errors import (
    InvalidImage,
    InvalidInput,
    InvalidJSON,
    NoImage,
    PayloadTooLarge,
    RequestCancelled,
    UnsupportedMediaType,
)

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


Shape = tuple[int, int, int]  # the model's input: (height, width, channels)


def _jpeg_draft_size(shape: Shape) -> tuple[int, int]:
    return shape[1] * JPEG_DRAFT_FACTOR, shape[0] * JPEG_DRAFT_FACTOR


def _drafts(width: int, height: int, shape: Shape) -> bool:
    """Whether Pillow's draft mode decodes a JPEG of this size reduced (it halves at least once)."""
    draft_width, draft_height = _jpeg_draft_size(shape)
    return min(width // draft_width, height // draft_height) >= 2


# JPEG colour spaces whose libjpeg-turbo RGB output through simplejpeg is Pillow's, pixel for pixel
# (tests/api/test_codec_fuzz.py), with the mode Pillow reports for them.
_JPEG_MODES = {"YCbCr": "RGB", "Gray": "L"}


def decode_image_bytes(
    data: bytes, max_pixels: int, budget: DecodeBudget = UNBOUNDED_DECODE, shape: Shape = CIFAR_INPUT_SHAPE
) -> DecodedImage:
    """PNG/JPEG/WebP bytes -> input of `shape`; other formats -> 415, garbage -> 400, huge -> 413.
    Blocks while a large image waits for decode memory: call it off the event loop."""
    return decode_jpeg(data, min(max_pixels, INLINE_DECODE_PIXELS), shape) or finish_decode(
        open_image(data, max_pixels), budget, shape
    )


def decode_jpeg(data: bytes, max_pixels: int, shape: Shape = CIFAR_INPUT_SHAPE) -> DecodedImage | None:
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


def finish_decode(
    image: Image.Image, budget: DecodeBudget = UNBOUNDED_DECODE, shape: Shape = CIFAR_INPUT_SHAPE
) -> DecodedImage:
    """Decode the pixels of an `open_image` result into input of `shape`, once `budget` has room
    for them (blocking: call it off the event loop unless the image is small)."""
    planned = plan_decode(image, shape)
    with budget.reserve(planned.needed_bytes) if planned.needed_bytes else contextlib.nullcontext():
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


def plan_decode(image: Image.Image, shape: Shape = CIFAR_INPUT_SHAPE) -> PlannedDecode:
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


def decode_array(instance: list[Any], value_range: str | None, shape: Shape = CIFAR_INPUT_SHAPE) -> DecodedImage:
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


def _decode_instance(
    instance: Instance, value_range: str | None, max_pixels: int, budget: DecodeBudget, shape: Shape
) -> DecodedImage:
    if isinstance(instance, B64Instance):
        try:
            data = base64.b64decode(instance.b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidImage("the b64 field is not valid base64") from None
        return decode_image_bytes(data, max_pixels, budget, shape)
    return decode_array(instance, value_range, shape)


def content_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def decode_json_body(
    data: bytes,
    max_pixels: int,
    max_instances: int,
    budget: DecodeBudget = UNBOUNDED_DECODE,
    shape: Shape = CIFAR_INPUT_SHAPE,
) -> DecodedRequest:
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
    if len(body.instances) > max_instances:
        raise PayloadTooLarge(
            f"{len(body.instances)} instances; at most {max_instances} per request",
            max_instances=max_instances,
        )
    images = [_decode_instance(i, body.value_range, max_pixels, budget, shape) for i in body.instances]
    baseline = (
        None if body.baseline is None else _decode_instance(body.baseline, body.value_range, max_pixels, budget, shape)
    )
    return DecodedRequest(images, baseline, batch=True)


def _decode_upload(
    image: bytes, baseline: bytes | None, max_pixels: int, budget: DecodeBudget, shape: Shape
) -> DecodedRequest:
    decoded_baseline = None if baseline is None else decode_image_bytes(baseline, max_pixels, budget, shape)
    return DecodedRequest([decode_image_bytes(image, max_pixels, budget, shape)], decoded_baseline, batch=False)


async def decode_raw_body(
    data: bytes, max_pixels: int, budget: DecodeBudget = UNBOUNDED_DECODE, shape: Shape = CIFAR_INPUT_SHAPE
) -> DecodedRequest:
    """A raw image body: small images decode here on the event loop; large ones wait here (not
    holding a worker thread) for room in the decode `budget`, then decode in the thread pool."""
    decoded = decode_jpeg(data, min(max_pixels, INLINE_DECODE_PIXELS), shape)
    if decoded is None:
        image = open_image(data, max_pixels)
        width, height = image.size
        planned = plan_decode(image, shape)
        if width * height <= INLINE_DECODE_PIXELS:
            decoded = planned.decode()
        else:
            async with budget.reserve_async(planned.needed_bytes):
                decoded = await run_in_threadpool(planned.decode)
    return DecodedRequest([decoded], None, batch=False)


def client_left_mid_upload() -> RequestCancelled:
    return RequestCancelled("the client disconnected before it had sent the whole body")


async def read_body(request: Request) -> bytes:
    """The whole body; a client that hangs up mid-upload is a cancelled request (499), not a failure."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise client_left_mid_upload() from None


async def read_images(
    request: Request,
    max_pixels: int,
    max_instances: int,
    budget: DecodeBudget = UNBOUNDED_DECODE,
    shape: Shape = CIFAR_INPUT_SHAPE,
) -> DecodedRequest:
    """Decode whatever supported body the request carries (see the module docstring).

    The body is read on the event loop; decoding (Pillow, JSON) runs in the thread pool so a large
    image never stalls other requests, except for raw bodies of small images (INLINE_DECODE_PIXELS).
    """
    try:
        return await _read_images(request, max_pixels, max_instances, budget, shape)
    except ClientDisconnect:
        raise client_left_mid_upload() from None


async def _read_images(
    request: Request, max_pixels: int, max_instances: int, budget: DecodeBudget, shape: Shape
) -> DecodedRequest:
    media_type = content_type(request.headers)
    if media_type == "multipart/form-data":
        async with request.form(max_files=2, max_fields=8) as form:  # closes the uploads' temp files
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("the multipart body needs the image in a file field named 'file'")
            image = await upload.read()
            baseline_upload = form.get("baseline")
            baseline = await baseline_upload.read() if isinstance(baseline_upload, UploadFile) else None
        return await run_in_threadpool(_decode_upload, image, baseline, max_pixels, budget, shape)
    if media_type in IMAGE_TYPES or media_type in SNIFFED_TYPES:
        body = await read_body(request)
        if not body:
            raise NoImage(f"no image was sent: {HOW_TO_SEND}", accepted=ACCEPTED_TYPES)
        return await decode_raw_body(body, max_pixels, budget, shape)
    if media_type == "application/json":
        body = await read_body(request)
        return await run_in_threadpool(decode_json_body, body, max_pixels, max_instances, budget, shape)
    raise UnsupportedMediaType(f"unsupported Content-Type {media_type}; {HOW_TO_SEND}", accepted=ACCEPTED_TYPES)


def wants_png(request: Request, format_param: str | None) -> bool:
    """?format=png|json wins; otherwise an Accept header naming image/png but not JSON."""
    if format_param is not None:
        return format_param == "png"
    return accepts_png(request.headers)


def accepts_png(headers: Headers) -> bool:
    accept = headers.get("accept", "").lower()
    return "image/png" in accept and "application/json" not in accept


_INSTANCE_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "object", "required": ["b64"], "properties": {"b64": {"type": "string", "format": "byte"}}},
        {"type": "array", "description": "nested numbers of the model's input shape (H, W, C) in value_range"},
    ]
}
_INSTANCES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["instances"],
    "properties": {
        "instances": {"type": "array", "minItems": 1, "items": _INSTANCE_SCHEMA},
        "value_range": {
            "type": "string",
            "enum": ["0-255", "0-1"],
            "description": "range of array instances: 0-255 if omitted, required when every value lies within 0-1",
        },
        "baseline": _INSTANCE_SCHEMA,
    },
}
IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One image as a multipart upload or raw bytes, or JSON instances.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "baseline": {"type": "string", "format": "binary"},
                    },
                }
            },
            **{
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in (*IMAGE_TYPES, "application/octet-stream")
            },
            "application/json": {"schema": _INSTANCES_SCHEMA},
        },
    }
}
