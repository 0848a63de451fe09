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
SECTION = REPO.joinpath("README.md").read_text().split("<!-- jobs-example", 1)[1].split("## Deployment", 1)[0]
BASH, PYTHON = (re.search(rf"```{kind}\n(.*?)```", SECTION, flags=re.S).group(1) for kind in ("bash", "python"))
DOC_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    """A server whose data root holds val/<class>/ images, and a repo-like folder to run in."""
    root = tmp_path_factory.mktemp("data")
    for name in ("cat", "dog"):
        (root / "val" / name).mkdir(parents=True)
        for path in sorted((data_dir / name).iterdir())[:2]:
            shutil.copy(path, root / "val" / name / path.name)
    work = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "examples", work / "examples")
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
    assert [r["source"] for r in rows] == [r["source"] for r in held] and len(rows) == 4
    assert {r["label"] for r in rows} == {"cat", "dog"} and all(r["deletion_area"] for r in rows)
    with zipfile.ZipFile(work / "results.zip") as archive:
        names = archive.namelist()
    assert sorted(n for n in names if n.startswith("maps/")) == [f"maps/{n}.npy" for n in range(4)]
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
    assert lines[0].split() == ["source", "label", "prediction", "deletion_area"]
    newest = httpx.get(f"{server.base_url}/jobs", params={"limit": 1}, timeout=30).json()["jobs"][0]
    held = httpx.get(f"{server.base_url}/jobs/{newest['id']}/results", timeout=60).json()["rows"]
    printed = [line.split() for line in lines[1:-1]]
    assert [(r[0], r[1], r[2]) for r in printed] == [(r["source"], r["label"], r["prediction"]) for r in held]
    assert [float(r[3]) for r in printed] == pytest.approx([r["deletion_area"] for r in held], abs=1e-6)
    assert lines[-1] == "4 maps of shape (32, 32, 3)"
