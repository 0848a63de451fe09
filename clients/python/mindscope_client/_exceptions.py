"""Errors raised by the SDK. The tree:

MindscopeError
├── TransportError            the service could not be reached, or did not answer in time
└── APIError                  the service answered with an error envelope (status, code, details)
    ├── BadRequest            400 / 422: the request cannot be used as sent
    │   ├── InvalidImage      400 invalid_image: the bytes are not a decodable image
    │   └── UnknownClass      422 unknown_class
    ├── Unauthorized          401: missing or wrong API key
    ├── NotFound              404
    │   ├── ModelNotFound     404 model_not_found
    │   └── LayerNotFound     404 unknown_layer
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415: only PNG, JPEG and WebP images are accepted
    ├── ServiceUnavailable    503 (retried when the service sends Retry-After)
    │   ├── Overloaded        503 overloaded
    │   └── ModelNotReady     503 model_not_ready
    └── ServerError           other 5xx
"""

from __future__ import annotations

from typing import Any


class MindscopeError(Exception):
    """Base of every error the SDK raises."""


class TransportError(MindscopeError):
    """Connection refused, reset or timed out (after the configured retries)."""


class APIError(MindscopeError):
    def __init__(self, status_code: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details or {}


class BadRequest(APIError): ...


class InvalidImage(BadRequest): ...


class UnknownClass(BadRequest): ...


class Unauthorized(APIError): ...


class NotFound(APIError): ...


class ModelNotFound(NotFound): ...


class LayerNotFound(NotFound): ...


class PayloadTooLarge(APIError): ...


class UnsupportedMediaType(APIError): ...


class ServiceUnavailable(APIError): ...


class Overloaded(ServiceUnavailable): ...


class ModelNotReady(ServiceUnavailable): ...


class ServerError(APIError): ...


_BY_CODE: dict[str, type[APIError]] = {
    "invalid_image": InvalidImage,
    "unknown_class": UnknownClass,
    "model_not_found": ModelNotFound,
    "unknown_layer": LayerNotFound,
    "overloaded": Overloaded,
    "model_not_ready": ModelNotReady,
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: BadRequest,
    503: ServiceUnavailable,
}


def error_from_response(status_code: int, body: Any) -> APIError:
    """The most specific APIError for a status and the service's `{"error": {...}}` body."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return (_BY_STATUS.get(status_code) or ServerError)(status_code, "http_error", str(body)[:200])
    code = str(error.get("code", "http_error"))
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status_code) or (ServerError if status_code >= 500 else APIError)
    return cls(status_code, code, str(error.get("message", "")), error.get("details") or {})


def raise_for_error(status_code: int, read_json: Any, text: str) -> None:
    """Raise the APIError of an error answer (status >= 400); `read_json()` parses its body."""
    if status_code < 400:
        return
    try:
        body = read_json()
    except ValueError:
        body = text
    raise error_from_response(status_code, body)
