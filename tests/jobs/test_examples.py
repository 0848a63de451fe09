"""Example-based explanations on a real server (uvicorn on loopback, the committed model): an `index`
job embeds a folder of CIFAR-10 images, and POST /explain/examples answers the nearest of them, in
JSON and as a PNG; the graph search (usearch's HNSW) against exact search; the refusals."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from mindscope.jobs.indexes import IndexInfo, IndexStore
from PIL import Image

from tests.jobs.helpers import finished

CLASSES = ("automobile", "cat", "frog", "ship")
JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("data-root")
    for name in CLASSES:
        (root / "set" / name).mkdir(parents=True)
        for path in sorted((data_dir / name).iterdir())[:6]:
            shutil.copy(path, root / "set" / name / path.name)
    (root / "set" / "cat" / "readme.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def indexed(http: httpx.Client) -> dict:
    response = http.post("/jobs", json={"kind": "index", "folder": "set", "parameters": {"name": "small"}})
    assert response.status_code == 202, response.text
    return finished(http, response.json()["id"])


def near_duplicate(path: Path) -> bytes:
    """The image resized to 48x48 and recompressed as a JPEG of quality 70."""
    resized = Image.open(path).convert("RGB").resize((48, 48), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    resized.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def test_an_index_job_embeds_every_image_and_reports_the_bad_file(http, indexed):
    assert indexed["state"] == "succeeded", indexed
    assert indexed["items"] == {"total": 25, "done": 24, "failed": 1, "queued": 0}
    listed = http.get("/explain/examples").json()
    (info,) = listed["indexes"]
    assert info["name"] == "small" and info["count"] == 24 and info["search"] == "exact"
    assert info["layer"] == "conv8" and info["dimensions"] == 128  # the layer feeding the 1x1 class maps
    assert info["job"] == indexed["id"]


def test_an_indexed_image_finds_itself_first_at_distance_0(http, indexed, data_root):
    for name in CLASSES:
        path = sorted((data_root / "set" / name).glob("*.jpg"))[2]
        response = http.post("/explain/examples?index=small&k=5", content=path.read_bytes(), headers=JPEG)
        assert response.status_code == 200, response.text
        body = response.json()
        first = body["neighbours"][0]
        assert first["source"] == f"set/{name}/{path.name}" and first["label"] == name
        assert first["distance"] == pytest.approx(0, abs=1e-5) and first["rank"] == 1
        distances = [n["distance"] for n in body["neighbours"]]
        assert distances == sorted(distances) and len(distances) == 5
        thumbnail = base64.b64decode(first["thumbnail"].removeprefix("data:image/png;base64,"))
        assert Image.open(io.BytesIO(thumbnail)).size == (32, 32)
        assert body["prediction"]["label"] in (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        )


def test_a_resized_recompressed_copy_finds_its_original_in_the_top_3(http, indexed, data_root):
    for name in CLASSES:
        for path in sorted((data_root / "set" / name).glob("*.jpg"))[:2]:
            response = http.post("/explain/examples?index=small&k=3", content=near_duplicate(path), headers=JPEG)
            assert response.status_code == 200, response.text
            sources = [n["source"] for n in response.json()["neighbours"]]
            assert f"set/{name}/{path.name}" in sources, (path.name, sources)


def test_the_examples_grid_is_a_png_of_the_query_and_its_neighbours(http, indexed, data_root):
    path = sorted((data_root / "set" / "ship").glob("*.jpg"))[0]
    response = http.post("/explain/examples?index=small&k=9&format=png", content=path.read_bytes(), headers=JPEG)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.width >= 800 and picture.height >= 300  # 5 columns, 2 rows of 1.6 in cells


def test_the_refusals_say_what_to_do(http, indexed):
    image = {"content": b"not an image", "headers": JPEG}
    missing = http.post("/explain/examples?index=nope", **image)
    # The body is read first: a bad image is the 400; a good one with a missing index the 404.
    assert missing.status_code == 400
    grey = Image.new("RGB", (32, 32), (128, 128, 128))
    buffer = io.BytesIO()
    grey.save(buffer, "PNG")
    png = {"content": buffer.getvalue(), "headers": {"Content-Type": "image/png"}}
    missing = http.post("/explain/examples?index=nope", **png)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_index"
    assert "small" in missing.json()["error"]["details"]["indexes"]
    assert http.post("/explain/examples?index=small&k=0", **png).status_code == 422
    assert http.post("/explain/examples?index=small&k=101", **png).status_code == 422
    assert http.post("/explain/examples", **png).status_code == 422  # no index named
    bad = [
        ({"parameters": {"name": "../up"}}, 422, "name"),
        ({"parameters": {}}, 422, "name"),
        ({"parameters": {"name": "x", "layer": "conv99"}}, 404, "conv99"),
        ({"parameters": {"name": "x", "steps": 3}}, 422, "steps"),
        ({"parameters": {"name": "x"}, "method": "grad-cam"}, 422, "method"),
    ]
    for changes, status, word in bad:
        response = http.post("/jobs", json={"kind": "index", "folder": "set", **changes})
        assert response.status_code == status and word in response.json()["error"]["message"], response.text
    grey_nearest = http.post("/explain/examples?index=small&k=24", **png).json()["neighbours"]
    assert len(grey_nearest) == 24  # k up to the index's size


def test_a_second_index_of_the_same_name_replaces_the_first_and_delete_removes_it(http, indexed):
    response = http.post(
        "/jobs", json={"kind": "index", "folder": "set/cat", "parameters": {"name": "cats", "layer": "conv3"}}
    )
    job = finished(http, response.json()["id"])
    assert job["state"] == "succeeded"
    again = http.post("/jobs", json={"kind": "index", "folder": "set/ship", "parameters": {"name": "cats"}})
    finished(http, again.json()["id"])
    listed = {i["name"]: i for i in http.get("/explain/examples").json()["indexes"]}
    assert listed["cats"]["count"] == 6 and listed["cats"]["layer"] == "conv8"  # the second one
    assert http.delete("/explain/examples/cats").status_code == 204
    assert "cats" not in [i["name"] for i in http.get("/explain/examples").json()["indexes"]]
    assert http.delete("/explain/examples/cats").status_code == 404


def test_the_graph_search_agrees_with_exact_search(tmp_path):
    """usearch's HNSW graph (used past 20,000 images) on 2,000 clustered vectors: every row finds
    itself first, and its 10 nearest agree with exact search's almost always."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 64))
    vectors = (centres[rng.integers(0, 20, 2000)] + 0.3 * rng.normal(size=(2000, 64))).astype(np.float32)
    store = IndexStore(tmp_path)
    info = IndexInfo("graph", "m", 1, "conv", 2000, 64, "hnsw", None, 0.0)
    thumbs = np.zeros((2000, 32, 32, 3), np.uint8)
    store.write(info, vectors, [f"{n}.jpg" for n in range(2000)], [None] * 2000, thumbs)
    index = store.get("m", 1, "graph")
    assert index.graph is not None
    found = agreed = 0
    for row in range(0, 2000, 20):
        graph = index.search(vectors[row], 10)
        exact = index.search(vectors[row], 10, exact=True)
        found += graph[0].row == row
        agreed += len({n.row for n in graph} & {n.row for n in exact})
        assert graph[0].distance == pytest.approx(0, abs=1e-5)
    assert found == 100 and agreed / 1000 >= 0.95


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readmes_examples_block_runs_as_written(server, tmp_path):
    """README's example-based block (CLI index-dir and examples, then curl) against this server."""
    block = re.search(r"<!-- examples-example.*?```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    repo = README.parent
    shutil.copytree(repo / "examples", tmp_path / "examples")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    script = block.replace("http://127.0.0.1:8000", server.base_url)
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert ran.returncode == 0, ran.stderr
    assert "index mine: 2 images at conv8 (exact search); 1 could not be read" in ran.stdout
    nearest = json.loads((tmp_path / "nearest.json").read_text())
    assert nearest["neighbours"][0]["source"] == "cat.jpg"
    assert nearest["neighbours"][0]["distance"] == pytest.approx(0, abs=1e-5)
    with Image.open(tmp_path / "nearest.png") as grid:
        assert grid.format == "PNG"


def test_the_sdks_find_the_nearest_images(server, indexed, data_root):
    import asyncio

    from mindscope_client import AsyncClient, Client

    path = sorted((data_root / "set" / "frog").glob("*.jpg"))[1]
    with Client(server.base_url) as client:
        assert "small" in [i["name"] for i in client.example_indexes()]
        found = client.examples(path, "small", k=4)
        assert isinstance(found, dict) and found["neighbours"][0]["source"] == f"set/frog/{path.name}"
        grid = client.examples(path, "small", as_png=True)
        assert grid.data.startswith(b"\x89PNG")

    async def run() -> dict:
        async with AsyncClient(server.base_url) as client:
            return await client.examples(path.read_bytes(), "small", k=2)  # type: ignore[return-value]

    assert asyncio.run(run())["neighbours"][0]["source"] == f"set/frog/{path.name}"
