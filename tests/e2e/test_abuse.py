"""Slow clients, huge-pixel images and refused bodies on a real uvicorn.

Time limits here are short settings (3 s), so a slow client is cut off soon, yet long beside any
stall of a loaded machine between a client's connect and its first bytes; what is asserted is the
answer (408, 503, the labels), never how long anything took.
"""

import io
import json
import socket
import threading

import httpx
import pytest
from mindscope.config import Settings
from mindscope.dataplane.decoding import decode_bytes
from PIL import Image

from ..api.helpers import assert_error
from ..servers import InProcessServer, read_http_response

JPEG = {"Content-Type": "image/jpeg"}
PNG = {"Content-Type": "image/png"}
BUDGET = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def strict_server(committed_store):
    settings = Settings(
        model_store_dir=committed_store.root,
        header_timeout_s=3,
        body_timeout_s=3,
        body_min_rate=1000,
        decode_budget_bytes=BUDGET,
        decode_wait_s=0,
    )
    with InProcessServer(settings) as running:
        yield running


def _connect(server: InProcessServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)  # a failsafe, not a bound
    return sock


def _status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _closed(sock: socket.socket) -> bool:
    return sock.recv(1) == b""


def test_headers_that_never_finish_get_408_and_the_socket_back(strict_server):
    with _connect(strict_server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-")  # and nothing more
        status, body = _status_and_body(read_http_response(sock))
        assert status == 408
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert _closed(sock)
    # A connection that says nothing at all is closed the same way.
    with _connect(strict_server) as sock:
        assert _status_and_body(read_http_response(sock))[0] == 408
    assert httpx.get(strict_server.base_url + "/health/live", timeout=30).status_code == 200


def test_a_kept_alive_connection_is_timed_per_request_not_per_connection(strict_server, sample_jpeg):
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(sample_jpeg)
        + sample_jpeg
    )
    with _connect(strict_server) as sock:
        for _ in range(3):
            sock.sendall(request)
            assert _status_and_body(read_http_response(sock))[0] == 200


def test_a_body_that_trickles_gets_408_with_what_arrived(strict_server):
    with _connect(strict_server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 2000\r\n\r\n")
        sock.sendall(b"\x89PNG\r\n\x1a\n12")  # 10 of the 2,000 bytes
        response = read_http_response(sock)
        status, body = _status_and_body(response)
        assert status == 408
        assert b"connection: close" in response.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "request_timeout"
        # Three seconds, plus one second per 1,000 bytes received.
        assert error["details"] == {"received_bytes": 10, "allowed_s": 3.01}
        assert _closed(sock)
    assert strict_server.metric('mindscope_requests_total{method="POST",route="/predict",status="408"}') >= 1


def test_a_body_refused_by_its_content_length_is_counted_under_its_route(strict_server):
    before = strict_server.metric('mindscope_requests_total{method="POST",route="/predict",status="413"}')
    too_long = Settings().max_body_bytes + 1
    with _connect(strict_server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % too_long)
        assert _status_and_body(read_http_response(sock))[0] == 413
    after = strict_server.metric('mindscope_requests_total{method="POST",route="/predict",status="413"}')
    assert after == before + 1
    assert strict_server.metric('mindscope_requests_total{method="POST",route="unmatched"') == 0


def _png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_large_images_wait_for_decode_memory_and_are_refused_when_none_comes_free(strict_server):
    budget = strict_server.app.state.decode_budget
    big = _png(1024)  # 4 MiB of pixels in flight: a quarter of the budget
    held = threading.Event()
    release = threading.Event()

    def hold_the_budget() -> None:
        with budget.reserve(BUDGET - 1024 * 1024):
            held.set()
            release.wait(120)

    holder = threading.Thread(target=hold_the_budget)
    holder.start()
    try:
        assert held.wait(60)
        error = assert_error(
            httpx.post(strict_server.base_url + "/predict", content=big, headers=PNG, timeout=60), 503, "overloaded"
        )
        assert error["details"]["needed_bytes"] == decode_bytes((1024, 1024), "RGB")
        assert error["details"]["budget_bytes"] == BUDGET
        assert "MINDSCOPE_DECODE_BUDGET_BYTES" in error["message"]
        # A small image never waits for the budget.
        small = httpx.post(strict_server.base_url + "/predict", content=_png(32), headers=PNG, timeout=60)
        assert small.status_code == 200
    finally:
        release.set()
        holder.join()
    answer = httpx.post(strict_server.base_url + "/predict", content=big, headers=PNG, timeout=60)
    assert answer.status_code == 200
    assert answer.json()["input"]["width"] == 1024
    assert budget.in_use == 0


def test_an_image_larger_than_the_whole_budget_still_decodes_alone(strict_server):
    huge = _png(2100)  # 4.4 M pixels, 17.6 MB: more than the 16 MiB budget
    assert decode_bytes((2100, 2100), "RGB") > BUDGET
    answer = httpx.post(strict_server.base_url + "/predict", content=huge, headers=PNG, timeout=120)
    assert answer.status_code == 200
    assert answer.json()["input"] == {**answer.json()["input"], "width": 2100, "height": 2100}
    assert answer.json()["label"] in answer.json()["classes"]
