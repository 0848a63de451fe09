"""Payload logging to a real receiver on loopback (an HTTP server the test starts), read back with the
CloudEvents SDK: each inference request and response arrives as a CloudEvent with the request id, the
model and version; a sink that is down or stuck never slows or fails a request, and what cannot be
sent is counted."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cloudevents.http import from_http
from mindscope.config import Settings

from tests.conftest import COMMITTED_STORE
from tests.servers import InProcessServer, LoopbackHTTP, QuietHandler, free_port, wait_until

JPEG = {"Content-Type": "image/jpeg"}


class Receiver:
    """An HTTP sink on loopback that keeps what it is sent; `hold` makes it wait before answering."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []
        self.hold = threading.Event()
        self.hold.set()
        received = self.events
        hold = self.hold

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hold.wait()
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(202)
                self.end_headers()

        self.http = LoopbackHTTP(Handler)
        self.url = f"{self.http.url}/events"

    def close(self) -> None:
        self.hold.set()
        self.http.close()


def serve(tmp_path: Path, **settings: object) -> InProcessServer:
    return InProcessServer(
        Settings(model_store_dir=COMMITTED_STORE, grpc_port=0, jobs_dir=tmp_path / "jobs", **settings)  # type: ignore[arg-type]
    )


def metric(server: InProcessServer, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    lines = [line for line in text.splitlines() if line.startswith(f"{name}_total ")]
    return float(lines[0].split()[1]) if lines else 0.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def test_each_request_and_response_arrives_as_a_cloud_event(tmp_path_factory, receiver, sample_jpeg):
    with serve(tmp_path_factory.mktemp("all"), payload_log_url=receiver.url) as server:
        answer = httpx.post(f"{server.base_url}/predict", content=sample_jpeg, headers=JPEG, timeout=60)
        assert answer.status_code == 200
        request_id = answer.headers["x-request-id"]
        wait_until(lambda: len(receiver.events) >= 2, timeout=30)
        httpx.get(f"{server.base_url}/health/ready")  # not inference: not logged
        events = {from_http(headers, body)["type"]: (headers, body) for headers, body in receiver.events[:2]}
        request_headers, request_body = events["org.kubeflow.serving.inference.request"]
        response_headers, response_body = events["org.kubeflow.serving.inference.response"]
        request_event = from_http(request_headers, request_body)
        assert request_event["id"] == request_id and request_event["specversion"] == "1.0"
        assert request_body == sample_jpeg and request_headers["content-type"] == "image/jpeg"
        model = answer.json()["model"]
        assert request_event["inferenceservicename"] == model["name"]
        assert request_event["modelversion"] == str(model["version"])
        assert request_event["endpoint"] == "/predict"
        assert response_body == answer.content and from_http(response_headers, response_body)["status"] == "200"
        assert metric(server, "mindscope_payload_log_sent") == 2
        assert len(receiver.events) == 2


def test_digests_only_responses_and_sampling(tmp_path_factory, receiver, sample_jpeg):
    receiver.events.clear()
    with serve(
        tmp_path_factory.mktemp("digest"),
        payload_log_url=receiver.url,
        payload_log_mode="request",
        payload_log_bodies="digest",
    ) as server:
        httpx.post(f"{server.base_url}/predict", content=sample_jpeg, headers=JPEG, timeout=60)
        wait_until(lambda: len(receiver.events) == 1, timeout=30)
        headers, body = receiver.events[0]
        assert headers["content-type"] == "application/vnd.mindscope.digest+json"
        assert json.loads(body) == {
            "sha256": hashlib.sha256(sample_jpeg).hexdigest(),
            "bytes": len(sample_jpeg),
            "content_type": "image/jpeg",
        }
    receiver.events.clear()
    with serve(tmp_path_factory.mktemp("none"), payload_log_url=receiver.url, payload_log_sample=0.0) as server:
        for _ in range(3):
            assert httpx.post(f"{server.base_url}/predict", content=sample_jpeg, headers=JPEG).status_code == 200
        assert metric(server, "mindscope_payload_log_sent") == 0 and receiver.events == []


def test_a_sink_that_is_down_or_stuck_never_holds_a_request(tmp_path_factory, receiver, sample_jpeg):
    down = f"http://127.0.0.1:{free_port()}/nobody"
    with serve(tmp_path_factory.mktemp("down"), payload_log_url=down) as server:
        for _ in range(3):
            assert httpx.post(f"{server.base_url}/predict", content=sample_jpeg, headers=JPEG).status_code == 200
        wait_until(lambda: metric(server, "mindscope_payload_log_failed") == 6, timeout=60)
    receiver.events.clear()
    receiver.hold.clear()  # the sink takes the first event and answers nothing until released
    try:
        with serve(tmp_path_factory.mktemp("stuck"), payload_log_url=receiver.url, payload_log_queue=2) as server:
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                for _ in range(10):  # 20 events: one at the sink, two queued, the rest dropped
                    assert client.post("/predict", content=sample_jpeg, headers=JPEG).status_code == 200
            assert receiver.events == []  # every request was answered while the sink held its first event
            assert metric(server, "mindscope_payload_log_dropped") >= 17  # at most 3 were held or queued
            receiver.hold.set()
            sent_and_dropped = ("mindscope_payload_log_sent", "mindscope_payload_log_dropped")
            wait_until(lambda: sum(metric(server, name) for name in sent_and_dropped) == 20, timeout=30)
            assert len(receiver.events) == metric(server, "mindscope_payload_log_sent") >= 2
    finally:
        receiver.hold.set()
