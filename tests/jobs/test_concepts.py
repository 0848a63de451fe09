"""TCAV on a real server (uvicorn on loopback, the committed model): concepts registered from a
data-root folder and from an archive; a `tcav` job's scores against 10 random sets with the t-test
against random CAVs, tested honestly: the class's own images as a concept score near 1 and are
significant; a random image set as a concept is not significant; the same seed repeats the result."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from mindscope.engine.concepts import cav, layer_score, welch_p_value
from PIL import Image

from tests.servers import wait_until

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Disjoint sets of CIFAR-10 training images: the cats to score, cats as a concept, a mixed
    concept, and a mixed pool to draw random sets from."""
    root = tmp_path_factory.mktemp("data-root")

    def copy(name: str, folder: str, span: slice) -> None:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for path in sorted((data_dir / name).iterdir())[span]:
            shutil.copy(path, root / folder / f"{name}-{path.name}")

    copy("cat", "scored/cat", slice(0, 16))
    copy("cat", "concepts/cats", slice(100, 120))
    for name in CLASSES:
        copy(name, "concepts/mixed", slice(300, 302))
        copy(name, "random", slice(200, 216))
    return root


@pytest.fixture(scope="module")
def concepts(http: httpx.Client, data_root: Path) -> dict:
    cats = http.post("/concepts", json={"name": "cats", "folder": "concepts/cats"})
    assert cats.status_code == 201, cats.text
    assert cats.headers["location"] == "/concepts/cats"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((data_root / "concepts" / "mixed").iterdir()):
            archive.write(path, f"mixed/{path.name}")
        archive.writestr("mixed/notes.txt", "not an image")
    mixed = http.post(
        "/concepts",
        files={"archive": ("mixed.zip", buffer.getvalue(), "application/zip")},
        data={"concept": '{"name": "mixed"}'},
    )
    assert mixed.status_code == 201, mixed.text
    return {"cats": cats.json(), "mixed": mixed.json()}


def tcav(http: httpx.Client, concept: str, **changes: object) -> dict:
    parameters = {"concept": concept, "target": "cat", "random_folder": "random", "layers": ["conv6", "conv8"]}
    parameters |= {"runs": 10, "size": 12, "seed": 3} | changes
    response = http.post("/jobs", json={"kind": "tcav", "folder": "scored", "parameters": parameters})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    wait_until(lambda: http.get(f"/jobs/{job_id}").json()["state"] in ("succeeded", "failed"), timeout=300)
    job = http.get(f"/jobs/{job_id}").json()
    assert job["state"] == "succeeded", job
    answer = http.get(f"/jobs/{job_id}/report")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    return {"job": job, "report": report, "layers": {layer["layer"]: layer for layer in report["layers"]}}


def test_concepts_are_registered_from_a_folder_and_an_archive(http, concepts):
    assert concepts["cats"]["count"] == 20 and concepts["cats"]["source"] == "concepts/cats"
    assert concepts["mixed"]["count"] == 20 and concepts["mixed"]["skipped"] == ["mixed/notes.txt"]
    assert [c["name"] for c in http.get("/concepts").json()["concepts"]] == ["cats", "mixed"]
    again = http.post("/concepts", json={"name": "cats", "folder": "concepts/cats"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "concept_exists"


def test_the_class_own_images_as_a_concept_score_near_1_and_are_significant(http, concepts):
    cats = tcav(http, "cats")
    assert cats["job"]["items"]["done"] == 16
    deep = cats["layers"]["conv8"]
    assert deep["significant"] and deep["score"] >= 0.8, deep
    assert len(deep["scores"]) == len(deep["random_scores"]) == 10
    assert deep["mean"] > deep["random_mean"]
    assert cats["report"]["alpha"] == pytest.approx(0.025)  # 0.05 over two layers (Bonferroni)


def test_a_random_image_set_as_a_concept_is_not_significant(http, concepts):
    mixed = tcav(http, "mixed")
    for layer in mixed["layers"].values():
        assert not layer["significant"] and layer["score"] is None, layer


def test_the_same_seed_repeats_the_scores_and_the_chart_reads(http, concepts):
    first, second = tcav(http, "cats", layers=["conv8"]), tcav(http, "cats", layers=["conv8"])
    assert first["report"]["layers"] == second["report"]["layers"]
    chart = http.get(f"/jobs/{first['job']['id']}/report?format=png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(chart.content)).size == (720, 440)


def test_the_refusals_say_what_to_do(http, concepts):
    base = {"concept": "cats", "target": "cat", "random_folder": "random"}
    bad = [
        ({**base, "concept": "nope"}, 404, "nope"),
        ({**base, "target": "zebra"}, 422, "zebra"),
        ({**base, "runs": 5}, 422, "runs"),
        ({**base, "layers": ["conv99"]}, 404, "conv99"),
        ({**base, "random_folder": "scored"}, 422, "random_folder"),  # 16 files: too few for 11 sets
        ({**base, "random_folder": "../elsewhere"}, 422, "outside"),
        ({**base, "color": 1}, 422, "color"),
    ]
    for parameters, status, word in bad:
        response = http.post("/jobs", json={"kind": "tcav", "folder": "scored", "parameters": parameters})
        assert response.status_code == status and word in response.json()["error"]["message"], response.text
    assert http.post("/concepts", json={"name": "x", "folder": "scored/cat/none"}).status_code == 422
    assert http.post("/concepts", json={"name": "../x", "folder": "scored"}).status_code == 422
    few = http.post("/concepts", json={"name": "few", "folder": "random"})  # fine: 160 images
    assert few.status_code == 201
    assert http.delete("/concepts/few").status_code == 204
    assert http.get("/concepts/few").status_code == 404


def test_cav_points_from_the_counterexamples_toward_the_concept():
    """The CAV of two separated clouds is their difference's direction; derivatives along it are
    positive for gradients that point to the concept."""
    rng = np.random.default_rng(0)
    concept = rng.normal(size=(40, 4, 4, 2)) + 1.0
    counter = rng.normal(size=(40, 4, 4, 2)) - 1.0
    vector = cav(concept, counter, seed=0)
    assert np.linalg.norm(vector) == pytest.approx(1, abs=1e-6)
    assert float(vector @ np.ones(32)) / np.sqrt(32) > 0.6  # toward (1, 1, ..., 1) / sqrt(32)
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    assert (flat(concept) @ vector).mean() > (flat(counter) @ vector).mean() + 2
    same = layer_score("l", np.ones((10, 10)), -np.ones((10, 10)), 0.05)
    assert same.significant and same.mean == 1.0 and same.random_mean == 0.0


def test_welchs_p_value_equals_scipys_where_both_sides_spread():
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.4, 0.9, 10), rng.uniform(0.3, 0.7, 10)
    assert welch_p_value(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert welch_p_value(np.ones(10), b) < 1e-6  # no spread on one side: still a p-value, no warning
    assert welch_p_value(np.full(10, 0.5), np.full(10, 0.5)) == 1.0


def test_the_cli_registers_a_concept_runs_tcav_and_writes_the_chart(server, data_root, tmp_path):
    import subprocess
    import sys

    cli = [sys.executable, "-m", "mindscope_client._cli", "--url", server.base_url]
    ran = subprocess.run(
        [
            *cli,
            "tcav",
            str(data_root / "scored"),
            "--concept",
            "cats-cli",
            "--concept-from",
            str(data_root / "concepts" / "cats"),
            "--target",
            "cat",
            "--random-folder",
            "random",
            "--layers",
            "conv8",
            "--size",
            "12",
            "--png",
            str(tmp_path / "tcav.png"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    assert "TCAV of cats-cli for cat over 16 images" in ran.stdout and "conv8" in ran.stdout
    with Image.open(tmp_path / "tcav.png") as chart:
        assert chart.size == (720, 440)


def test_the_async_sdk_runs_tcav_and_reads_its_report(server, concepts):
    import asyncio

    from mindscope_client import AsyncClient

    async def run() -> tuple[dict, bytes]:
        async with AsyncClient(server.base_url, timeout=300) as client:
            parameters = {
                "concept": "cats",
                "target": "cat",
                "random_folder": "random",
                "layers": ["conv8"],
                "size": 12,
            }
            job = await client.jobs.submit("tcav", folder="scored", parameters=parameters)
            await job.wait()
            report = await job.report()
            chart = await job.report(as_png=True)
            assert isinstance(report, dict) and isinstance(chart, bytes)
            return report, chart

    report, chart = asyncio.run(run())
    assert report["concept"] == "cats" and report["layers"][0]["significant"]
    assert chart.startswith(b"\x89PNG")
