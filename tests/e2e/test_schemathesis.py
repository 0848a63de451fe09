"""Schemathesis against the OpenAPI spec of a real server: no 5xx, responses match the spec."""

import subprocess
import sys
from pathlib import Path


def test_api_conforms_to_its_openapi_spec(server, tmp_path):
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
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
