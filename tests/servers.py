"""Real servers on loopback ports: a `mindscope serve` process, or the app on uvicorn in this process."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

import httpx
import numpy as np
import uvicorn
from mindscope.api.http_protocol import header_timeout_protocol
from mindscope.app import create_app
from mindscope.config import Settings
from mindscope.engine.batching import DynamicBatcher
from mindscope.engine.loaded_model import LoadedModel


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(
        self, process: subprocess.Popen[bytes], base_url: str, log: Path, log_handle: BinaryIO, grpc_port: int = 0
    ) -> None:
        self.process = process
        self.log_handle = log_handle
        self.base_url = base_url
        self.log = log
        self.grpc_address = f"127.0.0.1:{grpc_port}"  # the Open Inference Protocol's gRPC service

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(self.log.read_text()[-3000:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.log_handle.close()


def start_server(tmp_path: Path, store: Path, port: int | None = None, **env: str) -> Server:
    """`mindscope serve` as README.md gives it, in its own process on a loopback port (and its
    gRPC service on another)."""
    port = port or free_port()
    grpc_port = int(env.get("MINDSCOPE_GRPC_PORT", free_port()))
    log = tmp_path / f"server-{port}.log"
    command = [str(Path(sys.executable).with_name("mindscope")), "serve", "--port", str(port)]
    environment = {**os.environ, "MINDSCOPE_MODEL_STORE_DIR": str(store), "MINDSCOPE_GRPC_PORT": str(grpc_port), **env}
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
    return Server(process, f"http://127.0.0.1:{port}", log, handle, grpc_port)


class InProcessServer:
    """`create_app(settings)` on a real uvicorn, in a thread of the test process: real HTTP on a
    loopback port, with the loaded model within the test's reach (to hold it busy with a `ModelGate`)."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.port = port
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            http=header_timeout_protocol(settings.header_timeout_s),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> "InProcessServer":
        self._thread.start()
        deadline = time.monotonic() + 180
        while True:
            assert self._thread.is_alive(), "uvicorn stopped before it was ready"
            try:
                if httpx.get(f"{self.base_url}/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.1)

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=60)

    @property
    def model(self) -> LoadedModel:
        return self.app.state.registry.get()

    def metric(self, prefix: str) -> float:
        """The sum of every /metrics sample whose line starts with `prefix`."""
        lines = httpx.get(f"{self.base_url}/metrics", timeout=30).text.splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


class ModelGate:
    """Takes the place of a batcher's compiled call: records the rows of each call, and holds each
    call (so the model is busy, on purpose) until the test opens the gate."""

    def __init__(self, batcher: DynamicBatcher) -> None:
        self.batcher = batcher
        self.calls: list[int] = []
        self._inner = batcher.fn
        self._rate = batcher.stats.rows_per_s
        self._open = threading.Event()
        self._entered = threading.Semaphore(0)
        batcher.fn = self._call

    def _call(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        self.calls.append(len(arrays[0]))
        self._entered.release()
        assert self._open.wait(180), "the test never opened the gate"
        return self._inner(*arrays)

    def wait_entered(self, calls: int = 1) -> None:
        for _ in range(calls):
            assert self._entered.acquire(timeout=120), "the model was never called"

    def open(self) -> None:
        self._open.set()

    def __enter__(self) -> "ModelGate":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.open()
        self.batcher.fn = self._inner
        # The batcher timed the calls the test held: that was the gate, not the model's speed.
        self.batcher.stats.rows_per_s = self._rate


def wait_until(condition: Callable[[], object], timeout: float = 120.0, what: str = "condition") -> None:
    """Poll for a state the code under test reaches by itself; the timeout only ends a hung test."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def read_http_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length, read whole from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection mid-answer: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test's output clean."""

    def log_message(self, *_: object) -> None:
        pass


class LoopbackHTTP:
    """A threading HTTP server on a free loopback port, serving `handler` until `close`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
