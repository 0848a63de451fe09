"""The benchmark's load generator speaks enough HTTP/1.1 to drive the real server and count what it
sees; its floor app answers that load over the same uvicorn."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..servers import free_port

BENCH = Path(__file__).resolve().parents[2] / "bench"
LOADGEN = BENCH / "loadgen.py"


def run_loadgen(url: str, body: Path, *args: str) -> dict:
    command = [sys.executable, str(LOADGEN), url, str(body), "--warmup", "2", *args]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout)


def test_loadgen_drives_predict_and_reports_every_request(server, validation_sample, tmp_path):
    image = validation_sample[2][0]
    result = run_loadgen(f"{server.base_url}/predict", image, "--concurrency", "4", "--total", "24")
    assert result["failures"] == {}
    assert len(result["latencies_s"]) == 24 and min(result["latencies_s"]) > 0
    assert result["requests_per_s"] > 0 and result["cpu_s"] > 0
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    refused = run_loadgen(f"{server.base_url}/predict", garbage, "--total", "3")
    assert refused["failures"] == {"400": 3}


def test_floor_app_answers_every_request_with_the_given_bytes(validation_sample, tmp_path):
    answer = tmp_path / "answer.json"
    answer.write_bytes(b'{"label": "cat"}')
    port = free_port()
    floor = subprocess.Popen([sys.executable, str(BENCH / "floor_app.py"), str(port), str(answer)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = httpx.post(f"{base}/predict", content=b"x" * 100_000, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and floor.poll() is None, "the floor app did not start"
                time.sleep(0.1)
        assert reply.status_code == 200 and reply.content == answer.read_bytes()
        assert reply.headers["content-type"] == "application/json"
        result = run_loadgen(f"{base}/predict", validation_sample[2][0], "--concurrency", "4", "--total", "40")
        assert result["failures"] == {} and len(result["latencies_s"]) == 40
    finally:
        floor.terminate()
        floor.wait(timeout=30)
