"""Overload and body limits against a real server with a tiny queue and body cap."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ..api.helpers import assert_error
from ..servers import start_server


@pytest.fixture(scope="module")
def small_server(tmp_path_factory, committed_store):
    running = start_server(
        tmp_path_factory.mktemp("small"),
        committed_store.root,
        MINDSCOPE_QUEUE_SIZE="1",
        MINDSCOPE_MAX_BODY_BYTES="65536",
    )
    running.wait_ready()
    yield running
    running.stop()


def test_overload_is_refused_fast_while_liveness_answers(small_server, sample_jpeg, committed_store):
    url = f"{small_server.base_url}/explain/integrated-gradients?steps=1024&method=riemann_trapezoid"

    def explain(_):
        start = time.perf_counter()
        response = httpx.post(url, content=sample_jpeg, headers={"Content-Type": "image/jpeg"}, timeout=120)
        return response, time.perf_counter() - start

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(explain, i) for i in range(6)]
        time.sleep(0.5)
        live = httpx.get(f"{small_server.base_url}/health/live", timeout=5)
        results = [f.result() for f in futures]
    assert live.status_code == 200
    refused = [(r, t) for r, t in results if r.status_code == 503]
    served = [r for r, _ in results if r.status_code == 200]
    assert refused and served
    for response, _ in refused:
        assert_error(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1"
    assert min(t for _, t in refused) < 2.0
    metrics = httpx.get(f"{small_server.base_url}/metrics").text
    assert f'mindscope_rejections_total{{kind="gradients",model="{committed_store.resolve().label}"}}' in metrics


def test_chunked_bodies_over_the_cap_are_refused(small_server):
    def chunks():
        for _ in range(100):
            yield b"\0" * 4096

    response = httpx.post(
        f"{small_server.base_url}/predict", content=chunks(), headers={"Content-Type": "image/png"}, timeout=30
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")
    assert httpx.get(f"{small_server.base_url}/health/live").status_code == 200


def test_clients_that_disconnect_mid_request_leak_nothing(small_server, sample_jpeg):
    """The IG of a client that hangs up stops at its next chunk; nothing stays queued; the service answers."""

    def metric(prefix: str) -> float:
        text = httpx.get(f"{small_server.base_url}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    rows = 'mindscope_batch_rows_total{kind="gradients"'
    before = metric(rows)
    url = f"{small_server.base_url}/explain/integrated-gradients?steps=1024&method=riemann_trapezoid"
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url, content=sample_jpeg, headers={"Content-Type": "image/jpeg"}, timeout=0.5)
    deadline = time.monotonic() + 30
    while metric('mindscope_requests_total{method="POST",route="/explain/integrated-gradients",status="499"') < 1:
        assert time.monotonic() < deadline, "the abandoned request was never cancelled"
        time.sleep(0.2)
    assert metric("mindscope_queue_depth{") == 0
    # 1,027 gradient rows were asked for (the prediction, 1,024 steps, the two ends); far fewer ran.
    assert metric(rows) - before < 700
    response = httpx.post(
        f"{small_server.base_url}/predict", content=sample_jpeg, headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert response.status_code == 200
