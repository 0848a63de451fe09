"""README's "Serve your own model" block runs as written, from the repo root, in a shell without the
venv activated, while `make serve`'s server holds port 8000; what it prints is what Keras computes."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from ..conftest import COMMITTED_STORE
from ..servers import start_server
from .test_ports import _free_pair

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- serve-your-own-model:"
MAKE_SERVE_PORT = 8000


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.fixture
def make_serve(tmp_path):
    """`make serve` as README's first command leaves it: a server on 8000 (unless one is there)."""
    if _port_taken(MAKE_SERVE_PORT):
        yield None
        return
    server = start_server(tmp_path, COMMITTED_STORE, port=MAKE_SERVE_PORT, MINDSCOPE_GRPC_PORT="0")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_the_readme_block_imports_serves_and_answers_beside_make_serve(tmp_path, make_serve):
    text = README.read_text()
    block = re.search(re.escape(MARKER) + r".*?-->\n```bash\n(.*?)```", text, flags=re.S)
    assert block, "README.md lost its serve-your-own-model block"
    code = block.group(1)
    assert "8000" not in code, "the block must not use make serve's port"
    # The repo root as a newcomer has it after `make serve`: .venv there, nothing on PATH.
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    port = _free_pair()
    code = code.replace("8100", str(port)).replace("8101", str(port + 1))
    path = ":".join(p for p in os.environ["PATH"].split(":") if not p.startswith(str(Path(sys.executable).parent)))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MINDSCOPE_", "VIRTUAL_ENV"))}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=root,
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    work = root / "build" / "own-model"
    assert "wrote my_store/shapes/1" in done.stdout
    prediction = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert prediction["classes"] == ["circle", "square", "triangle"]
    assert prediction["input"]["width"] == 40 and prediction["model"] == {"name": "shapes", "version": 1}
    # What it printed is the model's own answer: softmax of its logits on the grey image at 28x28.
    model = keras.saving.load_model(work / "shapes.keras")
    logits = np.asarray(model(np.full((1, 28, 28, 1), 128 / 255, np.float32)))[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(prediction["probabilities"]["data"], expected, atol=1e-5)
    assert prediction["label"] == ["circle", "square", "triangle"][int(expected.argmax())]
    assert (work / "features.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_saved_model_block_imports_serves_and_explains(tmp_path):
    import tensorflow as tf

    block = re.search(re.escape("<!-- saved-model:") + r".*?-->\n```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert block, "README.md lost its saved-model block"
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    port = _free_pair()
    code = block.group(1).replace("8200", str(port))
    path = ":".join(p for p in os.environ["PATH"].split(":") if not p.startswith(str(Path(sys.executable).parent)))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MINDSCOPE_", "VIRTUAL_ENV"))}
    env["PATH"] = path
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    work = root / "build" / "saved-model"
    assert "wrote sm_store/flowers/1" in done.stdout and "a SavedModel" in done.stdout
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    prediction, refused = answers
    # What it printed is the SavedModel's own answer: softmax of its serving signature on the red image.
    pixels = np.zeros((1, 32, 32, 3), np.float32) + np.array([200, 40, 40], np.float32) / 255
    exported = tf.saved_model.load(str(work / "flowers_export"))  # kept: it owns the variables
    logits = exported.serve(pixels).numpy()[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(prediction["probabilities"]["data"], expected, atol=1e-5)
    assert (work / "red-ig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert refused["error"]["code"] == "layers_unavailable"
