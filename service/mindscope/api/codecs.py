"""HTTP request bodies -> model-ready images (through the data plane's decoding), and response
negotiation. Every REST route uses these.

Accepted bodies (one image unless noted):
- multipart/form-data with the image in field `file` (and optionally a baseline image in `baseline`);
- a raw body with Content-Type image/png, image/jpeg or image/webp, or with
  application/octet-stream or no Content-Type at all: the bytes say what they are;
- application/json `{"instances": [...], "value_range": "0-255" | "0-1", "baseline": instance?}`
  (`mindscope.dataplane.decoding`); may hold a batch.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.requests import ClientDisconnect

from mindscope import tracing
from mindscope.dataplane.decoding import (
    ACCEPTED_TYPES,
    HOW_TO_SEND,
    IMAGE_TYPES,
    SNIFFED_TYPES,
    DecodedImage,
    DecodedRequest,
    DecodeLimits,
    decode_json_body,
    decode_raw_body,
    decode_upload,
)
from mindscope.errors import InvalidInput, NoImage, RequestCancelled, UnsupportedMediaType

__all__ = ["DecodedImage", "DecodedRequest", "DecodeLimits", "read_images", "wants_png", "IMAGE_REQUEST_BODY"]


def content_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def client_left_mid_upload() -> RequestCancelled:
    return RequestCancelled("the client disconnected before it had sent the whole body")


async def read_body(request: Request) -> bytes:
    """The whole body; a client that hangs up mid-upload is a cancelled request (499), not a failure."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise client_left_mid_upload() from None


async def read_images(request: Request, limits: DecodeLimits) -> DecodedRequest:
    """Decode whatever supported body the request carries (see the module docstring).

    The body is read on the event loop; decoding (Pillow, JSON) runs in the thread pool so a large
    image never stalls other requests, except for raw bodies of small images (INLINE_DECODE_PIXELS).
    """
    try:
        with tracing.span("decode"):
            return await _read_images(request, limits)
    except ClientDisconnect:
        raise client_left_mid_upload() from None


async def _read_images(request: Request, limits: DecodeLimits) -> DecodedRequest:
    media_type = content_type(request.headers)
    if media_type == "multipart/form-data":
        async with request.form(max_files=2, max_fields=8) as form:  # closes the uploads' temp files
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("the multipart body needs the image in a file field named 'file'")
            image = await upload.read()
            baseline_upload = form.get("baseline")
            baseline = await baseline_upload.read() if isinstance(baseline_upload, UploadFile) else None
        return await run_in_threadpool(decode_upload, image, baseline, limits)
    if media_type in IMAGE_TYPES or media_type in SNIFFED_TYPES:
        body = await read_body(request)
        if not body:
            raise NoImage(f"no image was sent: {HOW_TO_SEND}", accepted=ACCEPTED_TYPES)
        return await decode_raw_body(body, limits)
    if media_type == "application/json":
        body = await read_body(request)
        return await run_in_threadpool(decode_json_body, body, limits)
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
