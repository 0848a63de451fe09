"""The audit job on a real server (uvicorn on loopback, the committed model) over CIFAR-10 images in
class-named folders: report.json's figures against the rows they come from, report.html in a real
headless Chromium (every section renders, nothing is fetched off the file, the numbers it shows are
report.json's), and the channels' dataset examples served by /visualize?source=dataset."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.jobs.helpers import finished

CLASSES = ("airplane", "cat", "dog", "ship", "truck")
PARAMETERS = {
    "explain_per_class": 2,
    "layers": ["conv6"],
    "channels": 3,
    "examples": 3,
    "mistakes": 3,
    "visualization_steps": 16,
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("data-root")
    for name in CLASSES:
        (root / "val" / name).mkdir(parents=True)
        for path in sorted((data_dir / name).iterdir())[40:48]:
            shutil.copy(path, root / "val" / name / path.name)
    (root / "val" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def audited(http: httpx.Client) -> dict:
    response = http.post("/jobs", json={"kind": "audit", "folder": "val", "parameters": PARAMETERS})
    assert response.status_code == 202, response.text
    job = finished(http, response.json()["id"], timeout=600)
    assert job["state"] == "succeeded", job
    report = http.get(f"/jobs/{job['id']}/report?format=json").json()
    rows = http.get(f"/jobs/{job['id']}/results").json()["rows"]
    return {"job": job, "report": report, "rows": rows}


def test_the_reports_figures_are_the_rows(audited):
    report, rows = audited["report"], audited["rows"]
    good = [r for r in rows if r["state"] == "succeeded"]
    assert report["images"] == len(good) == 40 and report["failed"] == 1
    assert report["accuracy"] == pytest.approx(np.mean([r["correct"] for r in good]))
    for name in CLASSES:
        mine = [r for r in good if r["label"] == name]
        assert report["per_class"][name]["images"] == len(mine) == 8
        assert report["per_class"][name]["correct"] == sum(r["correct"] for r in mine)
    assert sum(map(sum, report["confusion"])) == 40
    calibration = report["calibration"]
    assert sum(b["count"] for b in calibration["bins"]) == 40
    expected_ece = sum(
        b["count"] / 40 * abs(b["accuracy"] - b["confidence"]) for b in calibration["bins"] if b["count"]
    )
    assert calibration["ece"] == pytest.approx(expected_ece)
    confidences = [m["confidence"] for m in report["mistakes"]]
    assert confidences == sorted(confidences, reverse=True)
    wrong = sorted((r["confidence"] for r in good if not r["correct"]), reverse=True)
    assert confidences == pytest.approx(wrong[: len(confidences)])
    assert all(m["label"] != m["prediction"] for m in report["mistakes"])
    assert all(u["label"] == u["prediction"] for u in report["unsure"])
    for method in ("grad-cam", "integrated-gradients"):
        for name in CLASSES:
            for score in ("deletion", "insertion"):
                cell = report["trust"][method][name][score]
                assert cell["n"] == 2 and 0 <= cell["mean"] <= 1
    (layer,) = report["channels"]
    assert layer == "conv6" and [c["channel"] for c in report["channels"][layer]] == [0, 1, 2]
    for channel in report["channels"][layer]:
        activations = [e["activation"] for e in channel["examples"]]
        assert len(activations) == 3 and activations == sorted(activations, reverse=True)
        for example in channel["examples"]:
            top, left, bottom, right = example["box"]
            assert 0 <= top < bottom <= 32 and 0 <= left < right <= 32
            assert (bottom - top) < 32 or (right - left) < 32  # a conv6 unit does not see the whole image


def test_the_page_renders_offline_and_states_the_jsons_figures(http, audited, browser, tmp_path):
    page_html = http.get(f"/jobs/{audited['job']['id']}/report", headers={"Accept": "text/html"})
    assert page_html.status_code == 200 and page_html.headers["content-type"].startswith("text/html")
    assert "<script" not in page_html.text and "http://" not in page_html.text and "https://" not in page_html.text
    path = tmp_path / "report.html"
    path.write_bytes(page_html.content)
    report = audited["report"]
    requested: list[str] = []
    context = browser.new_context(offline=True)
    page = context.new_page()
    page.on("request", lambda request: requested.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    for section in ("accuracy", "confusion", "calibration", "mistakes", "unsure", "trust", "channels"):
        assert page.locator(f"section#{section}").is_visible(), section
    broken = page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0
    assert page.locator("img").count() > 10
    assert all(url.startswith(("file://", "data:")) for url in requested), requested
    stated = page.eval_on_selector_all("[data-key]", "cells => cells.map(c => [c.dataset.key, c.textContent])")
    assert len(stated) > 50
    for key, text in stated:
        value = _lookup(report, key)
        if value is None:
            assert text.strip().endswith("–"), key
        elif key.endswith(".source"):
            assert str(value) in text, key
        elif isinstance(value, int):
            assert int(text) == value, key
        else:
            assert float(text.split()[-1]) == pytest.approx(value, abs=0.0051), key
    context.close()


def _lookup(report: dict, key: str) -> object:
    """report.json's value at a page's data-key: a dotted path; channels.<layer>.<channel>.<k>.<field>
    is the k-th dataset example of that channel."""
    parts = key.split(".")
    if parts[0] == "channels":
        _, layer, channel, k, field = parts
        entry = next(c for c in report["channels"][layer] if c["channel"] == int(channel))
        return entry["examples"][int(k)][field]
    node: object = report
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    return node


def test_dataset_examples_are_served_for_the_audited_layer(http, audited):
    response = http.get("/visualize/conv6/1?source=dataset")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = audited["report"]["channels"]["conv6"][1]["examples"]
    assert [e["source"] for e in body["examples"]] == [e["source"] for e in expected]
    assert body["job"] == audited["job"]["id"] and body["feature"].startswith("data:image/png;base64,")
    picture = http.get("/visualize/conv6/1?source=dataset&format=png")
    assert picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).width >= 500
    assert http.get("/visualize/conv6/7?source=dataset").status_code == 422  # channels 0-2 were computed
    missing = http.get("/visualize/conv3/0?source=dataset")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "dataset_examples_missing"


def test_a_running_audit_has_no_report_yet_and_bad_parameters_are_refused(http):
    for parameters, word in (
        ({"methods": ["nope"]}, "nope"),
        ({"channels": 0}, "channels"),
        ({"layers": ["conv99"]}, "conv99"),
        ({"color": 1}, "color"),
    ):
        response = http.post("/jobs", json={"kind": "audit", "folder": "val", "parameters": parameters})
        assert response.status_code in (404, 422) and word in json.dumps(response.json()), response.text
    predict = http.post("/jobs", json={"kind": "predict", "folder": "val"}).json()
    assert http.get(f"/jobs/{predict['id']}/report").status_code == 422


def test_the_cli_audits_a_local_folder_into_report_files(server, data_root, tmp_path):
    import subprocess
    import sys

    ran = subprocess.run(
        [sys.executable, "-m", "mindscope_client._cli", "--url", server.base_url, "audit", str(data_root / "val"),
         "--out", str(tmp_path / "audit"), "--explain-per-class", "1", "--layers", "conv3", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["images"] == 40 and f"accuracy {report['accuracy']:.3f}" in ran.stdout
    assert (tmp_path / "audit" / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_readmes_audit_block_runs_as_written(server, tmp_path):
    import re
    import subprocess

    readme = Path(__file__).resolve().parents[2] / "README.md"
    block = re.search(r"<!-- audit-example.*?```bash\n(.*?)```", readme.read_text(), flags=re.S).group(1)
    script = block.replace("http://127.0.0.1:8000", server.base_url)
    shutil.copytree(readme.parent / "examples", tmp_path / "examples")
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["images"] == 2 and report["per_class"]["cat"]["images"] == 2
    assert list(report["channels"]) == ["conv6"] and len(report["channels"]["conv6"]) == 4
    assert (tmp_path / "report.html").read_text().count('<section id="') == 7
    with Image.open(tmp_path / "conv6-0-examples.png") as grid:
        assert grid.format == "PNG"
