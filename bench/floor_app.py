"""What an HTTP request costs the machine when the server has nothing to do.

    python bench/floor_app.py PORT ANSWER_FILE

A bare ASGI app on the same uvicorn the service runs on (same event loop and HTTP parser, no access
log): it reads each request's body and answers 200 with the bytes of ANSWER_FILE as JSON, whatever
the path (the benchmark's readiness poll included), without decoding an image, calling a model,
routing, logging or counting anything. Driven by bench/loadgen.py like the service, it gives the
least CPU per request a Python front end on this machine could spend, and so how close to the
in-process throughput a served model can get here (serve_bench.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


def floor_app(answer: bytes) -> ASGIApp:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        more_body = True
        while more_body:
            message = await receive()
            more_body = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


if __name__ == "__main__":
    port, answer_file = int(sys.argv[1]), Path(sys.argv[2])
    app = floor_app(answer_file.read_bytes())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", access_log=False, lifespan="off")
