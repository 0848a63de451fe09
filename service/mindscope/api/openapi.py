"""The OpenAPI schema with this server's caps: the limits that come from Settings are written into
the parameters they bound, so /docs, /openapi.json and GET /explain say what the server enforces."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from mindscope.config import Settings


def parameter_caps(settings: Settings) -> dict[str, dict[str, Any]]:
    """JSON Schema bounds per query parameter name."""
    return {
        "steps": {"minimum": 2, "maximum": settings.max_steps},
        "alphas": {"minItems": 1, "maxItems": settings.max_alphas},
    }


def install_openapi(app: FastAPI, settings: Settings) -> None:
    caps = parameter_caps(settings)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        parameter["schema"].update(caps.get(parameter["name"], {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
