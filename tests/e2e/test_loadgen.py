"""The benchmark's load generator speaks enough HTTP/1.1 to drive the real server and count what it
sees; its minimal and floor apps answer that load over the same uvicorn."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx

from ..conftest import COMMITTED_STORE

BENCH = Path(__file__).resolve().parents[2] / "bench"
LOADGEN = BENCH / "loadgen.py"
JPEG = {"Content-Type": "image/jpeg"}


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
    answer = b'{"label": "cat"}'
    floor, base = serve_bench().start_floor_server(answer, tmp_path)  # as the benchmark starts it
    try:
        reply = httpx.post(f"{base}/predict", content=b"x" * 100_000, timeout=5)
        assert reply.status_code == 200 and reply.content == answer
        assert reply.headers["content-type"] == "application/json"
        result = run_loadgen(f"{base}/predict", validation_sample[2][0], "--concurrency", "4", "--total", "40")
        assert result["failures"] == {} and len(result["latencies_s"]) == 40
    finally:
        floor.terminate()
        floor.wait(timeout=30)


def test_minimal_app_answers_predict_as_the_service_does(server, validation_sample):
    """The benchmark's lower bound on serving work must do the service's work: same answer."""
    body = validation_sample[2][0].read_bytes()
    minimal, base = serve_bench().start_minimal_server(COMMITTED_STORE)  # as the benchmark starts it
    try:
        reply = httpx.post(f"{base}/predict", content=body, headers=JPEG, timeout=30)
        assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
        assert reply.json() == httpx.post(f"{server.base_url}/predict", content=body, headers=JPEG).json()
        result = run_loadgen(f"{base}/predict", validation_sample[2][0], "--concurrency", "4", "--total", "40")
        assert result["failures"] == {} and len(result["latencies_s"]) == 40
    finally:
        minimal.terminate()
        minimal.wait(timeout=30)


def serve_bench() -> ModuleType:
    """bench/serve_bench.py, which is a script beside the packages rather than part of one."""
    spec = importlib.util.spec_from_file_location("serve_bench", BENCH / "serve_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
