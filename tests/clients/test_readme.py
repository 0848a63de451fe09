"""Every example in clients/README.md runs, as written, against a real server, and what it prints
is what the service answers: each curl call's JSON is compared with the same request sent here, each
file it writes is the picture the service draws, and the SDK and CLI print the service's label and
confidence."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
README = REPO / "clients" / "README.md"
DOC_URL = "http://127.0.0.1:8000"
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", README.read_text(), flags=re.S)
SETUP, EXAMPLES = BLOCKS[0], BLOCKS[1:]
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".gif": b"GIF89a"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The scratch folder the README's first block makes, from a repo root that has examples/."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "examples", root / "examples")
    assert SETUP[0] == "bash" and "examples/cat.jpg" in SETUP[1]
    subprocess.run(["bash", "-euo", "pipefail", "-c", SETUP[1]], cwd=root, check=True, timeout=60)
    return root / "build" / "try"


@pytest.fixture(scope="module")
def native(server, workdir):
    """What the service answers for the sample image."""
    jpeg = (workdir / "cat.jpg").read_bytes()
    return httpx.post(f"{server.base_url}/predict", content=jpeg, headers={"Content-Type": "image/jpeg"}).json()


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
        "mindscope-client --url http://127.0.0.1:8000 attribute",
    ):
        assert route in text
    assert len(EXAMPLES) >= 8


def json_documents(text: str) -> list:
    """The JSON documents printed one after another (curl adds no newline between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def curl_calls(code: str) -> list[list[str]]:
    return [shlex.split(line) for line in code.replace("\\\n", " ").splitlines() if line.startswith("curl ")]


def same_request(base_url: str, args: list[str], workdir: Path) -> httpx.Response:
    """The request a curl command line sends, sent again with httpx."""
    url = next(a for a in args if a.startswith("http")).replace(DOC_URL, base_url)
    headers = dict(args[i + 1].split(": ", 1) for i, a in enumerate(args) if a == "-H")
    for i, a in enumerate(args):
        if a == "-F":
            name, file = args[i + 1].split("=@")
            return httpx.post(url, files={name: (file, (workdir / file).read_bytes())}, headers=headers, timeout=120)
        if a in ("--data-binary", "--data"):
            return httpx.post(url, content=(workdir / args[i + 1][1:]).read_bytes(), headers=headers, timeout=120)
    return httpx.get(url, headers=headers, timeout=120)


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def run(code: str, language: str, server, workdir: Path) -> str:
    code = code.replace(DOC_URL, server.base_url)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(("language", "code"), EXAMPLES, ids=[f"{i}-{lang}" for i, (lang, _) in enumerate(EXAMPLES)])
def test_example_prints_what_the_service_answers(server, workdir, native, language, code):
    out = run(code, language, server, workdir)
    calls = curl_calls(code)
    if calls and language == "bash" and "mindscope-client" not in code:
        printed = [c for c in calls if "-o" not in c]
        documents = json_documents(out)
        assert len(documents) == len(printed), out
        for args, document in zip(printed, documents, strict=True):
            again = same_request(server.base_url, args, workdir)
            assert without_timings(document) == without_timings(again.json()), shlex.join(args)
        for args in calls:
            if "-o" in args:
                written = workdir / args[args.index("-o") + 1]
                assert written.read_bytes().startswith(MAGIC[written.suffix]), written
                Image.open(written).verify()
        return
    label, confidence = native["label"], native["confidence"]
    if "mindscope-client" in code:
        assert f"cat.jpg: {label} ({confidence:.1%})" in out.splitlines()
        assert f"target: {label} (3), its probability; method gauss_legendre, 64 steps" in out
        assert f"grad-cam: {label} (3), its probability" in out and "deletion" in out
        assert f"occlusion: {label} (3)" in out
        for name in ("explanation.png", "conv6.png", "histograms.png", "occlusion.png"):
            assert (workdir / name).read_bytes().startswith(MAGIC[".png"])
    elif "AsyncClient" in code:
        assert f"[{label!r}, {label!r}]" in out and f"{{{label!r}}}" in out
    else:
        assert f"{label} {confidence!r}" in out  # print(prediction.label, prediction.confidence, ...)
        assert "unknown_layer" in out and "conv1" in out
