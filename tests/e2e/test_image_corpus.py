"""Pillow's own test images, posted to a real server: odd modes, broken files and the crashers that
OSS-Fuzz and others found in Pillow, none of them written here.

The corpus is the `Tests/images` folder of the Pillow release this venv runs, taken from its
source distribution on PyPI once and kept under build/ (not committed).
"""

import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import run

import httpx
import PIL
import pytest

CORPUS = Path(__file__).resolve().parents[2] / "build" / "corpus"
ANSWERS = {200, 400, 413, 415, 422}


def pillow_test_images() -> Path:
    root = CORPUS / f"pillow-{PIL.__version__}"
    if not (root / "Tests" / "images").is_dir():
        with tempfile.TemporaryDirectory() as download:
            fetched = run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
                + [f"pillow=={PIL.__version__}", "--dest", download],
                capture_output=True,
                text=True,
            )
            if fetched.returncode != 0:
                pytest.fail(f"could not download Pillow's source distribution from PyPI: {fetched.stderr[-500:]}")
            (archive,) = Path(download).glob("pillow-*.tar.gz")
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if m.isfile() and "/Tests/images/" in m.name]
                tar.extractall(CORPUS, members=members, filter="data")
    return root / "Tests" / "images"


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    files = sorted(path for path in pillow_test_images().rglob("*") if path.is_file())
    assert len(files) > 500
    return files


def test_every_file_gets_a_label_or_a_clean_client_error_and_the_service_stays_ready(server, corpus):
    def post(path: Path) -> tuple[Path, int, dict]:
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            # No Content-Type claim: the service must tell what the bytes are, as for `curl --data-binary`.
            response = http.post("/predict", content=path.read_bytes())
        return path, response.status_code, response.json()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(post, corpus))
    wrong = [(path.name, status, body) for path, status, body in results if status not in ANSWERS]
    assert wrong == []
    for path, status, body in results:
        if status == 200:
            assert body["label"] in body["classes"], path.name
        else:
            assert set(body) == {"error"} and body["error"]["message"], (path.name, body)
    statuses = {status for _, status, _ in results}
    assert {200, 400, 415} <= statuses  # the corpus holds good, broken and unsupported images
    assert httpx.get(f"{server.base_url}/health/ready", timeout=30).status_code == 200
