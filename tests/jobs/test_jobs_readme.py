"""README's Jobs examples run as written (the URL pointed at a real `mindscope serve`), and what they
write is what the service holds: the curl results against the job's own rows, the CLI's files, the
SDK's table."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import COMMITTED_STORE
from tests.servers import start_server

REPO = Path(__file__).resolve().parents[2]
SECTION = REPO.joinpath("README.md").read_text().split("<!-- jobs-example", 1)[1].split("\n## ", 1)[0]
BASH, PYTHON = (re.search(rf"```{kind}\n(.*?)```", SECTION, flags=re.S).group(1) for kind in ("bash", "python"))
DOC_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A repo-like folder to run in, and a server whose data root is its examples/, as README says."""
    work = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "examples", work / "examples")
    root = work / "examples"
    (work / ".venv").mkdir()
    (work / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    env = {"MINDSCOPE_DATA_ROOT": str(root), "MINDSCOPE_JOBS_DIR": str(tmp_path_factory.mktemp("jobs"))}
    server = start_server(tmp_path_factory.mktemp("log"), COMMITTED_STORE, **env)
    try:
        server.wait_ready()
        yield server, work
    finally:
        server.stop()


def test_the_curl_and_cli_examples_run_and_write_the_jobs_results(served):
    server, work = served
    script = BASH.replace(DOC_URL, server.base_url)
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, check=True, timeout=600)
    job = json.loads((work / "job.json").read_text())
    events = (work / "events.txt").read_text()
    assert "event: end" in events and '"state":"succeeded"' in events
    rows = list(csv.DictReader((work / "results.csv").read_text().splitlines()))
    held = httpx.get(f"{server.base_url}/jobs/{job['id']}/results", timeout=60).json()["rows"]
    assert [r["source"] for r in rows] == [r["source"] for r in held] == ["README.md", "cat.jpg", "cat.png"]
    assert [r["state"] for r in rows] == ["failed", "succeeded", "succeeded"]
    assert all(
        float(r["deletion_area"]) == pytest.approx(h["deletion_area"]) for r, h in zip(rows[1:], held[1:], strict=True)
    )
    with zipfile.ZipFile(work / "results.zip") as archive:
        names = archive.namelist()
    assert sorted(n for n in names if n.startswith("maps/")) == ["maps/1.npy", "maps/2.npy"]
    upload = json.loads((work / "upload.json").read_text())
    assert upload["kind"] == "predict" and upload["source"] == "archive" and upload["items"]["total"] == 2
    cli = work / "results"
    table = list(csv.DictReader((cli / "results.csv").read_text().splitlines()))
    states = {r["source"]: r["state"] for r in table}
    assert states == {"README.md": "failed", "cat.jpg": "succeeded", "cat.png": "succeeded"}  # not an image
    assert sorted(p.name for p in (cli / "maps").iterdir()) == [f"{r['n']}.npy" for r in table if r["map"]]
    first_id = (cli / "job-id").read_text().strip()
    # Run again: the CLI follows the job it started instead of submitting another.
    before = len(httpx.get(f"{server.base_url}/jobs", timeout=30).json()["jobs"])
    again = subprocess.run(
        [
            str(work / ".venv/bin/mindscope-client"),
            "--url",
            server.base_url,
            "explain-dir",
            "examples/",
            "--method",
            "grad-cam",
            "--evaluate",
            "deletion,insertion",
            "--out",
            "results/",
            "--quiet",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert f"job {first_id} (started earlier)" in again.stderr
    assert len(httpx.get(f"{server.base_url}/jobs", timeout=30).json()["jobs"]) == before


def test_the_sdk_example_prints_the_jobs_table(served):
    server, work = served
    done = subprocess.run(
        [sys.executable, "-c", PYTHON.replace(DOC_URL, server.base_url)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["source", "state", "prediction", "deletion_area"]
    newest = httpx.get(f"{server.base_url}/jobs", params={"limit": 1}, timeout=30).json()["jobs"][0]
    held = httpx.get(f"{server.base_url}/jobs/{newest['id']}/results", timeout=60).json()["rows"]
    printed = [line.split() for line in lines[1:-1]]
    assert [(r[0], r[1], r[2]) for r in printed] == [(r["source"], r["state"], str(r["prediction"])) for r in held]
    good = [(float(p[3]), r["deletion_area"]) for p, r in zip(printed, held, strict=True) if r["state"] == "succeeded"]
    assert len(good) == 2 and all(shown == pytest.approx(area, abs=1e-6) for shown, area in good)
    assert lines[-1] == "2 maps of shape (32, 32, 3)"


def test_the_readme_says_how_to_start_the_server_these_examples_need():
    text = REPO.joinpath("README.md").read_text()
    assert "`MINDSCOPE_DATA_ROOT=$PWD/examples make serve`" in text.split("<!-- jobs-example", 1)[0]
