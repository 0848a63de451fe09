"""Overload, disconnects and body limits on a real uvicorn, with the model held busy by the test.

The model is a `ModelGate` around the real compiled call: the test decides when each batch may run,
so what is asserted (who is refused, what is computed) never depends on how fast this machine is.
"""

import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from mindscope.config import Settings

from ..api.helpers import assert_error
from ..servers import InProcessServer, ModelGate, wait_until

JPEG = {"Content-Type": "image/jpeg"}
IG = "/explain/integrated-gradients?steps=1024&method=riemann_trapezoid&target=0"
# 62 steps and the two ends: 64 rows, one compiled call; so each admitted request has one call in flight.
ONE_CALL_IG = "/explain/integrated-gradients?steps=62&method=riemann_trapezoid&target=0"


@pytest.fixture(scope="module")
def small_server(committed_store):
    settings = Settings(model_store_dir=committed_store.root, queue_size=1, max_body_bytes=65536)
    with InProcessServer(settings) as running:
        yield running


def test_a_full_queue_is_refused_at_once_and_admitted_work_finishes(small_server, sample_jpeg, committed_store):
    gradients = small_server.model.gradient_batcher
    with ModelGate(gradients) as gate, ThreadPoolExecutor(2) as pool:
        post = lambda: httpx.post(small_server.base_url + ONE_CALL_IG, content=sample_jpeg, headers=JPEG, timeout=180)  # noqa: E731
        first = pool.submit(post)
        gate.wait_entered()  # its first chunk holds the model
        second = pool.submit(post)
        wait_until(lambda: gradients.depth == 1, what="the second request's chunk queueing")
        # The queue (1 call) is full and the model cannot finish anything until the gate opens, so
        # this answer can only be the refusal, given at once.
        refused = httpx.post(small_server.base_url + ONE_CALL_IG, content=sample_jpeg, headers=JPEG, timeout=180)
        assert_error(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "1"
        assert httpx.get(f"{small_server.base_url}/health/live", timeout=30).status_code == 200
        gate.open()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert gate.calls == [64, 64]  # the refused request computed nothing
    label = committed_store.resolve().label
    assert small_server.metric(f'mindscope_rejections_total{{kind="gradients",model="{label}"}}') == 1


@pytest.fixture(scope="module")
def roomy_server(committed_store):
    # A deadline far off: the tests hold the model as long as they need without being refused for time.
    with InProcessServer(Settings(model_store_dir=committed_store.root, request_timeout_s=600)) as running:
        yield running


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


def test_clients_that_disconnect_mid_request_leak_nothing(roomy_server, sample_jpeg):
    """The IG of a client that hangs up starts no model work after the hang-up is seen, leaves nothing
    queued, and the service answers the next request."""
    cancelled = 'mindscope_requests_total{method="POST",route="/explain/integrated-gradients",status="499"'
    before_499 = roomy_server.metric(cancelled)
    before_disconnects = roomy_server.metric("mindscope_client_disconnects_total")
    with ModelGate(roomy_server.model.gradient_batcher) as gate:
        with socket.create_connection(("127.0.0.1", roomy_server.port)) as client:
            head = f"POST {IG} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(sample_jpeg)}"
            client.sendall(head.encode() + b"\r\n\r\n" + sample_jpeg)
            gate.wait_entered()  # the first batch (one or two chunks of 64 of the 1,026 rows) holds the model
        wait_until(
            lambda: roomy_server.metric("mindscope_client_disconnects_total") > before_disconnects,
            what="the server seeing the disconnect",
        )
        gate.open()  # the chunk in flight finishes; nothing after it may start
        wait_until(lambda: roomy_server.metric(cancelled) > before_499, what="the 499")
        assert len(gate.calls) == 1  # the batch in flight when the client left; no other started
    assert roomy_server.metric("mindscope_queue_depth{") == 0
    response = httpx.post(f"{roomy_server.base_url}/predict", content=sample_jpeg, headers=JPEG, timeout=60)
    assert response.status_code == 200


def test_a_predict_during_a_burst_of_explanations_does_not_wait_for_them(roomy_server, sample_jpeg):
    """Forward and gradient work have their own lanes: with the gradient lane held and a burst of
    1,024-step explanations queued behind it, /predict is still answered."""
    gradients = roomy_server.model.gradient_batcher
    with ModelGate(gradients) as gate, ThreadPoolExecutor(4) as pool:
        post = lambda: httpx.post(roomy_server.base_url + IG, content=sample_jpeg, headers=JPEG, timeout=300)  # noqa: E731
        burst = [pool.submit(post) for _ in range(4)]
        gate.wait_entered()
        wait_until(lambda: gradients.depth >= 3 * 16, what="the burst queueing")  # 17 chunks each, less one batch
        predicted = httpx.post(f"{roomy_server.base_url}/predict", content=sample_jpeg, headers=JPEG, timeout=60)
        assert predicted.status_code == 200 and not any(f.done() for f in burst)
        gate.open()
        assert [f.result().status_code for f in burst] == [200] * 4
