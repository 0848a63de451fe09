"""Who may call: with MINDSCOPE_API_KEY set, every front end asks for the same key the same way."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from mindscope.config import Settings
from mindscope.errors import Unauthorized


def check_api_key(headers: Mapping[str, str], settings: Settings) -> None:
    """With MINDSCOPE_API_KEY set: `Authorization: Bearer KEY` or `X-API-Key: KEY` (header names in
    lower case, as HTTP and gRPC metadata both give them) on every call."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    header = headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), expected):
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
