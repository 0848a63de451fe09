"""The one error envelope, `{"error": {"code", "message", "details"}}`, for every failure."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mindscope.api.schemas import ErrorResponse
from mindscope.errors import MindscopeError

logger = logging.getLogger("mindscope")

_HTTP_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details or {})}}
    return JSONResponse(body, status_code=status, headers=headers)


def domain_error_response(exc: MindscopeError) -> JSONResponse:
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers or None)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MindscopeError)
    return domain_error_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, code, message, {}, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"location": list(error.get("loc", ())), "message": error.get("msg", ""), "input": error.get("input")}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, p['location']))}: {p['message']}" for p in problems)
    return error_response(422, "validation_error", f"invalid request: {summary}", {"errors": problems})


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "the server failed to answer this request; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MindscopeError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "no image sent (no_image), undecodable image (invalid_image) or unparseable JSON (invalid_json)",
        401: "missing or wrong API key (unauthorized)",
        403: "admin routes are off until an API key is configured (admin_disabled)",
        404: "unknown model, version or layer; initial weights asked of a model stored without them",
        413: "body, image or batch too large (payload_too_large)",
        415: "unsupported Content-Type or image format",
        422: "invalid parameters or array shape (validation_error, invalid_input, unknown_class)",
        503: "model not loaded yet, failed its integrity check, or the service is overloaded (Retry-After)",
        504: "no compiled call finished within the deadline (deadline_exceeded)",
    }.items()
}
