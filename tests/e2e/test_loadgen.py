"""The benchmark's load generator speaks enough HTTP/1.1 to drive the real server and count what it sees."""

import json
import subprocess
import sys
from pathlib import Path

LOADGEN = Path(__file__).resolve().parents[2] / "bench" / "loadgen.py"


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
