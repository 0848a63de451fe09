"""Real images through a real uvicorn process on loopback."""

import io
import shutil
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from ..api.helpers import array_of, assert_error
from ..servers import read_http_response, start_server, wait_until


def test_predict_over_http_matches_the_labels(server, validation_sample):
    images, labels, paths = validation_sample

    def classify(path):
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            response = http.post("/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
            response.raise_for_status()
            return response.json()["class_index"]

    with ThreadPoolExecutor(8) as pool:
        predicted = list(pool.map(classify, paths[:64]))
    assert np.mean(np.asarray(predicted) == labels[:64]) >= 0.6


def test_integrated_gradients_over_http(server, sample_jpeg):
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        body = http.post(
            "/explain/integrated-gradients?steps=64", content=sample_jpeg, headers={"Content-Type": "image/jpeg"}
        ).json()
        assert array_of(body["attributions"]).shape == (32, 32, 3)
        assert body["completeness"]["relative_delta"] < 0.01
        png = http.post("/activations/conv3?format=png", files={"file": ("x.jpg", sample_jpeg, "image/jpeg")})
        assert Image.open(io.BytesIO(png.content)).size[0] > 0
        assert_error(
            http.post("/activations/conv0", content=sample_jpeg, headers={"Content-Type": "image/jpeg"}),
            404,
            "unknown_layer",
        )


def test_a_corrupt_model_keeps_readiness_503(tmp_path, committed_store):
    entry = tmp_path / "store" / "cifar10-allcnn" / "1"
    shutil.copytree(committed_store.entry_dir(committed_store.resolve()), entry)
    model = entry / "model.keras"
    model.write_bytes(model.read_bytes()[:-100])
    broken = start_server(tmp_path, tmp_path / "store")
    try:
        deadline = time.monotonic() + 120
        body: dict = {}
        while body.get("status") != "failed" and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                response = httpx.get(f"{broken.base_url}/health/ready", timeout=2)
            except httpx.TransportError:
                continue
            body = response.json()
        assert response.status_code == 503
        assert body["status"] == "failed" and "SHA-256" in body["detail"]
        assert httpx.get(f"{broken.base_url}/health/live", timeout=2).status_code == 200
        assert_error(
            httpx.post(f"{broken.base_url}/predict", content=b"x", headers={"Content-Type": "image/png"}),
            503,
            "model_not_ready",
        )
    finally:
        assert broken.stop() == 0


def test_sigterm_lets_requests_in_flight_finish_and_exits_zero(tmp_path, committed_store, sample_jpeg):
    running = start_server(tmp_path, committed_store.root)
    running.wait_ready()

    def in_flight() -> float:
        lines = httpx.get(f"{running.base_url}/metrics", timeout=30).text.splitlines()
        return sum(float(line.split()[1]) for line in lines if line.startswith("mindscope_requests_in_flight "))

    port = int(running.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as client:
        head = "POST /explain/integrated-gradients?steps=64 HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg"
        client.sendall(f"{head}\r\nContent-Length: {len(sample_jpeg)}\r\n\r\n".encode() + sample_jpeg[:100])
        wait_until(lambda: in_flight() >= 2, what="the request in flight")  # ours and the /metrics call itself
        running.process.send_signal(signal.SIGTERM)
        client.sendall(sample_jpeg[100:])  # the request, begun before the signal, ends after it
        answer = read_http_response(client)
    assert answer.startswith(b"HTTP/1.1 200") and b'"steps":64' in answer
    assert running.process.wait(timeout=60) == 0
    running.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{running.base_url}/health/live", timeout=2)


def test_a_busy_port_exits_nonzero_with_one_line_before_loading_anything(tmp_path, committed_store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(tmp_path, committed_store.root, port=port)
        assert server.process.wait(timeout=120) == 1
        server.stop()
    output = server.log.read_text()
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in output
    assert "now serving" not in output and "Traceback" not in output


def test_a_client_that_hangs_up_mid_upload_is_a_499_with_one_log_line(server):
    def count(route: str) -> float:
        prefix = f'mindscope_requests_total{{method="POST",route="{route}",status='
        lines = httpx.get(f"{server.base_url}/metrics", timeout=30).text.splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix) and "499" in line)

    logged = len(server.log.read_text())
    port = int(server.base_url.rsplit(":", 1)[1])
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n0123456789'
    # the fast path, the routed /predict (multipart parsing), and an explanation
    cases = (
        ("/predict", "image/png", b"0123456789"),
        ("/predict", "multipart/form-data; boundary=x", part),
        ("/explain/interior-gradients", "image/png", b"0123456789"),
    )
    for path, media, sent in cases:
        before = count(path)
        with socket.create_connection(("127.0.0.1", port)) as client:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {media}\r\nContent-Length: 2000\r\n\r\n"
            client.sendall(head.encode() + sent)  # a part of the 2,000 bytes promised, then gone
        wait_until(lambda path=path, before=before: count(path) > before, what=f"the 499 of {path}")
    written = server.log.read_text()[logged:]
    assert "Traceback" not in written and "Exception in ASGI application" not in written
    assert written.count('"status": 499') == 3 and '"status": 500' not in written
    assert httpx.get(f"{server.base_url}/health/ready").status_code == 200
