"""Domain errors. Each carries its HTTP status and a stable machine-readable code.

The engine raises these; `mindscope.api.errors` maps every one of them (and the framework's own
404/405/422) to the single envelope `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

from typing import Any


class MindscopeError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ModelNotFound(MindscopeError):
    status_code = 404
    code = "model_not_found"


class ModelIntegrityError(MindscopeError):
    """A store entry's files do not match the SHA-256 values in its metadata, or cannot be read."""

    status_code = 500
    code = "model_integrity_error"
