"""The least a Python server must do to answer /predict, with the service's own parts.

    python bench/minimal_app.py PORT STORE_DIR

A bare ASGI app on the same uvicorn the service runs on (no access log). Every POST is taken as
/predict with a raw image body: it reads the body, decodes it with the service's codec, runs it
through the service's dynamic batcher and compiled model, and answers the service's JSON. It does
nothing else: no routing, API key, size or time limits, request id, log line or metrics, and no
error envelope (a bad body fails the request). Any other request (the benchmark's readiness poll)
gets an empty 200. Driven by bench/loadgen.py like the service, it measures the throughput that the
work a /predict request cannot skip allows on this machine (serve_bench.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from mindscope.api.routes.predict import answer_prediction
from mindscope.app import create_app
from mindscope.config import Settings
from mindscope.dataplane.decoding import DecodeLimits, decode_raw_body
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.registry import ModelRegistry
from starlette.types import ASGIApp, Receive, Scope, Send


def minimal_app(loaded: LoadedModel, max_pixels: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, more_body = b"", True
        while more_body:
            message = await receive()
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        decoded = await decode_raw_body(body, DecodeLimits(loaded.input_shape, max_pixels))
        await (await answer_prediction(loaded, decoded, png=False))(scope, receive, send)

    return app


if __name__ == "__main__":
    port, store = int(sys.argv[1]), Path(sys.argv[2])
    settings = Settings(model_store_dir=store)
    registry: ModelRegistry = create_app(settings).state.registry  # the service's, batching settings included
    loaded = registry.get()
    loaded.warm_up()
    app = minimal_app(loaded, settings.max_image_pixels)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", access_log=False, lifespan="off")
