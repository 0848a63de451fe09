"""Two servers on one machine: the gRPC port follows the HTTP one, and a taken port (HTTP or gRPC)
stops the second server's start with one line instead of sharing the first one's calls."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as triton
from mindscope.cli import grpc_port_for

from ..conftest import COMMITTED_STORE
from ..servers import Server

MINDSCOPE = str(Path(sys.executable).with_name("mindscope"))


def _free_pair() -> int:
    """An HTTP port whose next port is free too."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two free neighbouring ports")


def _environment(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key != "MINDSCOPE_GRPC_PORT"}
    return {**environment, "MINDSCOPE_MODEL_STORE_DIR": str(COMMITTED_STORE), **extra}


def _serve(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """A second `mindscope serve` that is expected to stop at once."""
    return subprocess.run(
        [MINDSCOPE, "serve", *args], env=_environment(**extra), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory):
    port = _free_pair()
    log = tmp_path_factory.mktemp("ports") / "first.log"
    handle = log.open("wb")
    process = subprocess.Popen(
        [MINDSCOPE, "serve", "--port", str(port)], stdout=handle, stderr=subprocess.STDOUT, env=_environment()
    )
    server = Server(process, f"http://127.0.0.1:{port}", log, handle, grpc_port=port + 1)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_the_grpc_port_follows_the_http_port():
    assert grpc_port_for(8000, None) == 8001
    assert grpc_port_for(8792, None) == 8793
    assert grpc_port_for(8000, 9001) == 9001
    assert grpc_port_for(8000, 0) == 0  # off


def test_a_server_answers_grpc_on_its_http_port_plus_one(first):
    client = triton.InferenceServerClient(first.grpc_address)
    try:
        assert client.is_server_ready()
        assert client.is_model_ready("cifar10-allcnn")
    finally:
        client.close()


def test_a_second_server_on_the_same_grpc_port_fails_with_one_line(first):
    http_port = _free_pair()
    grpc_port = first.grpc_address.rsplit(":", 1)[1]
    done = _serve("--port", str(http_port), "--grpc-port", grpc_port)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{grpc_port}" in lines[0] and "--grpc-port" in lines[0]
    # The same through the environment variable, as `make serve GRPC_PORT=...` would set it.
    done = _serve("--port", str(http_port), MINDSCOPE_GRPC_PORT=grpc_port)
    assert done.returncode == 1 and "cannot listen for gRPC" in done.stderr
    # Its HTTP port was given back: nothing listens there.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", http_port))
    # The first server still answers every gRPC call, on fresh connections.
    for _ in range(5):
        client = triton.InferenceServerClient(first.grpc_address)
        try:
            assert client.is_model_ready("cifar10-allcnn")
        finally:
            client.close()


def test_a_second_server_on_the_same_http_port_fails_with_one_line(first):
    port = first.base_url.rsplit(":", 1)[1]
    done = _serve("--port", port, "--grpc-port", "0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"mindscope serve: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use; choose another --port"
    ]
