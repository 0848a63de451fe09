"""Errors in the shape the standard protocols use, `{"error": "..."}`, on their routes only.

`ProtocolRoute` is the route class of the V1 (TF Serving / KServe) and V2 (Open Inference) routers:
whatever our own routes would answer in the `{"error": {"code", "message", "details"}}` envelope
(a domain error, a framework 404/405/422) these answer with the same status and the message alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from mindscope.errors import MindscopeError

logger = logging.getLogger("mindscope.protocols")


class ProtocolError(BaseModel):
    error: str


PROTOCOL_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProtocolError, "description": description}
    for status, description in {
        400: "the body is not JSON, or its binary tensor data does not add up",
        401: "missing or wrong API key",
        404: "unknown model, version, output or route",
        413: "too many images, or an image with too many pixels",
        415: "an encoded image of a format not accepted",
        422: "a tensor of the wrong name, datatype or shape, or a bad parameter",
        503: "the model is still loading, or the service is overloaded",
        504: "the model work did not finish within the deadline",
    }.items()
}


def protocol_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ProtocolRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except MindscopeError as exc:
                return protocol_error(exc.status_code, exc.message, exc.headers or None)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, error.get('loc', ())))}: {error.get('msg', '')}" for error in exc.errors()
                )
                return protocol_error(422, f"invalid request: {problems}")
            except HTTPException as exc:
                return protocol_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

        return answer


async def protocol_not_found(request: Request) -> Response:
    route = f"{request.method} {request.url.path}"
    return protocol_error(404, f"no route {route}; see README 'Use it from existing clients'")
