"""A real `mindscope serve` process on a loopback port, for tests that need the server itself."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, process: subprocess.Popen[bytes], base_url: str, log: Path, log_handle: BinaryIO) -> None:
        self.process = process
        self.log_handle = log_handle
        self.base_url = base_url
        self.log = log

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


def start_server(tmp_path: Path, store: Path, **env: str) -> Server:
    """`mindscope serve` as README.md gives it, in its own process on a loopback port."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    command = [str(Path(sys.executable).with_name("mindscope")), "serve", "--port", str(port)]
    environment = {**os.environ, "MINDSCOPE_MODEL_STORE_DIR": str(store), **env}
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
    return Server(process, f"http://127.0.0.1:{port}", log, handle)
