"""Schemathesis against the OpenAPI spec of a real server: no 5xx, responses match the spec.

The server runs with small caps (steps, samples, model rows per explanation): schemathesis
generates valid requests up to each documented maximum, and what is checked here is the
answers' conformance, not how long the largest explanation takes (bench/ measures that). The
caps it meets are the ones the spec documents, so their errors are checked too.
"""

import subprocess
import sys
from pathlib import Path

from ..conftest import COMMITTED_STORE
from ..servers import start_server

SMALL_CAPS = {
    "MINDSCOPE_MAX_STEPS": "32",
    "MINDSCOPE_MAX_SAMPLES": "4",
    "MINDSCOPE_MAX_ROWS": "256",
    "MINDSCOPE_MAX_ALPHAS": "4",
}


def test_api_conforms_to_its_openapi_spec(tmp_path):
    server = start_server(tmp_path, COMMITTED_STORE, **SMALL_CAPS)
    try:
        server.wait_ready()
        command = [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{server.base_url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "10",
            "--request-timeout",
            "60",
            "--generation-deterministic",
            "--workers",
            "1",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
