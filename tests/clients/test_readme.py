"""Every example in clients/README.md runs, as written, against a real server."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "clients" / "README.md"
DOC_URL = "http://127.0.0.1:8000"
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture
def workdir(tmp_path, validation_sample):
    shutil.copy(validation_sample[2][0], tmp_path / "cat.jpg")
    return tmp_path


def test_the_readme_has_examples_for_every_endpoint():
    text = README.read_text()
    for route in (
        "/predict",
        "/activations/conv3",
        "/activations/animation",
        "/weights/histogram",
        "/explain/integrated-gradients",
        "/explain/interior-gradients",
        "/models",
        "/health/ready",
    ):
        assert route in text
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize(("language", "code"), BLOCKS, ids=[f"{i}-{lang}" for i, (lang, _) in enumerate(BLOCKS)])
def test_example_runs(server, workdir, language, code):
    code = code.replace(DOC_URL, server.base_url)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip()
    if "conv42" in code:
        assert "unknown_layer" in result.stdout
