"""README's "Use it from existing clients" blocks run as written against a real `mindscope serve`,
and answer what the native API answers."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def block(marker: str, language: str) -> str:
    found = re.search(rf"<!-- {marker}:.*?-->\n```{language}\n(.*?)```", README.read_text(), flags=re.S)
    assert found, f"README.md lost its {marker} block"
    return found.group(1)


def run(server, tmp_path, marker: str, language: str) -> list[str]:
    """The block from a repo root holding examples/ (the curl block makes build/try, the Python one
    runs there)."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    scratch = tmp_path / "build" / "try"
    scratch.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "cat.jpg", scratch / "cat.jpg")
    code = block(marker, language).replace("http://127.0.0.1:8000", server.base_url)
    code = code.replace("127.0.0.1:8001", server.grpc_address)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    cwd = tmp_path if language == "bash" else scratch
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_the_curl_block_answers_as_the_native_api(server, tmp_path):
    b64, rows, columns, status, metadata, infer = map(json.loads, run(server, tmp_path, "existing-clients", "bash"))
    jpeg = (REPO / "examples" / "cat.jpg").read_bytes()
    native = httpx.post(f"{server.base_url}/predict", content=jpeg, headers={"Content-Type": "image/jpeg"}).json()
    expected = np.array(native["probabilities"]["data"], np.float32)
    np.testing.assert_allclose(b64["predictions"][0], expected, rtol=1e-5, atol=1e-6)
    # The rows carry the decoded pixels rounded to 4 decimals: the same image to within 5e-5.
    np.testing.assert_allclose(rows["predictions"][0], expected, atol=1e-3)
    assert columns["outputs"] == rows["predictions"]
    assert status["ready"] is True and status["model_version_status"][0]["state"] == "AVAILABLE"
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 32, 32, 3]}]
    probabilities, conv9 = infer["outputs"]
    assert probabilities["name"] == "probabilities" and probabilities["shape"] == [1, 10]
    np.testing.assert_allclose(probabilities["data"], rows["predictions"][0], rtol=1e-5, atol=1e-6)
    assert conv9["name"] == "conv9" and conv9["shape"] == [1, 8, 8, 10] and len(conv9["data"]) == 640


def test_the_triton_grpc_block_prints_the_native_probabilities(server, tmp_path):
    (printed,) = run(server, tmp_path, "existing-clients-python", "python")
    jpeg = (REPO / "examples" / "cat.jpg").read_bytes()
    native = httpx.post(f"{server.base_url}/predict", content=jpeg, headers={"Content-Type": "image/jpeg"}).json()
    values = np.array([float(v) for v in printed.strip("[] ").split()], np.float32)
    np.testing.assert_allclose(values, np.round(native["probabilities"]["data"], 3), atol=1.5e-3)
